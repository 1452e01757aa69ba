"""${secret:ARN} and ${secret:ARN#key} in engine and pipeline config, read from
moto's Secrets Manager when the configuration loads: the MSK SCRAM password
reaches librdkafka without sitting in a file or a log line, each ARN is
fetched once per load, and a secret that cannot be read fails validation
with the ARN and the AWS error."""
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import CONNECTD, ROOT, create_topic, produce, read_ndjson, unique, wait_for_lines

STACK = Path(os.environ.get("CONNECTD_STACK_DIR", ROOT / "build" / "stack"))


def env_file(path):
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out


@pytest.fixture(scope="module")
def aws():
    moto = env_file(STACK / "moto.env")
    endpoint = os.environ.get("MOTO_ENDPOINT") or moto.get("MOTO_ENDPOINT")
    if not endpoint:
        pytest.fail("moto is not running: start it with scripts/moto-start (make test does)")
    env = {"AWS_ENDPOINT_URL_SECRETSMANAGER": endpoint,
           "AWS_ACCESS_KEY_ID": moto.get("AWS_ACCESS_KEY_ID", "testing"),
           "AWS_SECRET_ACCESS_KEY": moto.get("AWS_SECRET_ACCESS_KEY", "testing"),
           "AWS_REGION": moto.get("AWS_REGION", "eu-west-1")}
    import boto3
    sm = boto3.client("secretsmanager", endpoint_url=endpoint, region_name=env["AWS_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    return sm, env


def fetched_lines(logs, arn):
    return [l for l in logs.splitlines() if f"${{secret:{arn}}}: read from AWS Secrets Manager" in l]


def missing_arn(env):
    return (f"arn:aws:secretsmanager:{env['AWS_REGION']}:123456789012:secret:"
            f"missing-{uuid.uuid4().hex[:8]}-AbCdEf")


def test_scram_password_from_secrets_manager(kafka, engines, tmp_path, aws):
    sm, env = aws
    password = kafka["KAFKA_SCRAM_PASSWORD"]
    dir_token = "dir-" + uuid.uuid4().hex[:12]
    plain = sm.create_secret(Name=unique("connectd/msk-password"), SecretString=password)["ARN"]
    js = sm.create_secret(Name=unique("connectd/msk"), SecretString=json.dumps(
        {"username": kafka["KAFKA_SCRAM_USER"], "dir": dir_token, "port": 9093}))["ARN"]

    topic = unique("secret-events")
    create_topic(kafka, topic, 2)
    produce(kafka, topic, [(f"k{i}", b'{"eventId":"e%d"}' % i) for i in range(200)])

    props = {"bootstrap.servers": kafka["KAFKA_SASL_BOOTSTRAP"], "security.protocol": "SASL_SSL",
             "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": f"${{secret:{js}#username}}",
             "sasl.password": f"${{secret:{plain}}}", "ssl.ca.location": kafka["KAFKA_CA_PEM"]}
    out = tmp_path / "out"
    # The JSON secret is named three times: one GetSecretValue.
    pipeline = {"name": "secrets", "topics": [topic],
                "sinks": [{"name": "a", "plugin": "file", "path": f"{out}/${{secret:{js}#dir}}/a.ndjson"},
                          {"name": "b", "plugin": "file", "path": f"{out}/${{secret:{js}#dir}}/b.ndjson"}]}
    eng = engines(props, {"p": pipeline}, env=env)
    # The password sits in no file the engine reads.
    for f in eng.dir.iterdir():
        assert password not in f.read_text(errors="replace"), f
    eng.start()
    for name in ("a", "b"):
        got = wait_for_lines(out / dir_token / f"{name}.ndjson", 200, proc=eng.proc)
        assert got == 200, eng.logs()[-3000:]
    ids = sorted(r["value"]["eventId"] for r in read_ndjson(out / dir_token / "a.ndjson"))
    assert ids == sorted(f"e{i}" for i in range(200))
    logs = eng.logs()
    assert "(SASL_SSL, SCRAM-SHA-512)" in logs, logs[-3000:]
    assert len(fetched_lines(logs, plain)) == 1, logs[-3000:]
    assert len(fetched_lines(logs, js)) == 1, logs[-3000:]
    assert eng.stop() == 0
    logs = eng.logs()
    bad = [l for l in logs.splitlines() if password in l]
    assert not bad, "the secret reached the log:\n" + "\n".join(bad)


def run_validate(eng, env):
    p = subprocess.run([str(CONNECTD), "validate", "-c", str(eng.dir / "connectd.json")],
                       capture_output=True, timeout=60, env=env)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert not [l for l in err.splitlines() if "Sanitizer" in l or "runtime error:" in l], err
    return p.returncode, out, err


def test_validate_names_missing_secret_and_aws_error(kafka, engines, tmp_path, aws):
    sm, env = aws
    value = "v-" + uuid.uuid4().hex
    good = sm.create_secret(Name=unique("connectd/api"), SecretString=json.dumps({"k": value}))
    missing = missing_arn(env)
    pipeline = {"name": "v", "topics": ["t"],
                "sinks": [{"name": "a", "plugin": "file",
                           "path": f"{tmp_path}/${{secret:{good['ARN']}#k}}"},
                          {"name": "b", "plugin": "file",
                           "path": f"{tmp_path}/${{secret:{missing}}}/x"},
                          {"name": "c", "plugin": "file",
                           "path": f"{tmp_path}/${{secret:{good['ARN']}#nope}}"}]}
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"]}, {"p": pipeline}, env=env)
    rc, out, err = run_validate(eng, dict(os.environ, **env))
    assert rc == 1, out + err
    lines = out.splitlines()
    want = (f"sinks[1].path: ${{secret:{missing}}}: ResourceNotFoundException: "
            "Secrets Manager can't find the specified secret.")
    assert any(want in l for l in lines), out
    assert any(f"${{secret:{good['ARN']}#nope}}" in l and 'key "nope"' in l for l in lines), out
    assert len(lines) == 2, out  # the good reference resolved
    assert value not in out and value not in err

    # The same configuration does not start; the error names the ARN.
    eng.start()
    assert eng.proc.wait(timeout=60) == 1
    eng.log.close()
    logs = eng.logs()
    assert f"${{secret:{missing}}}: ResourceNotFoundException" in logs, logs[-3000:]
    assert value not in logs


def test_validate_resolves_secrets_in_engine_config(kafka, engines, tmp_path, aws):
    sm, env = aws
    js = sm.create_secret(Name=unique("connectd/engine"), SecretString=json.dumps(
        {"client": "connectd-" + uuid.uuid4().hex[:6], "n": 1}))["ARN"]
    eng = engines({"bootstrap.servers": kafka["KAFKA_BOOTSTRAP"],
                   "client.id": f"${{secret:{js}#client}}"},
                  {"p": {"name": "v", "topics": ["t"],
                         "sinks": [{"plugin": "file", "path": str(tmp_path / "x")}]}}, env=env)
    eng.log_path.touch()  # never started: validate only
    rc, out, err = run_validate(eng, dict(os.environ, **env))
    assert rc == 0 and "valid (1 pipeline(s))" in out, out + err

    # A number where a string is wanted; no credentials at all.
    (eng.dir / "connectd.json").write_text(
        (eng.dir / "connectd.json").read_text().replace("#client}", "#n}"))
    rc, out, err = run_validate(eng, dict(os.environ, **env))
    assert rc == 1 and f'${{secret:{js}#n}}: key "n" in the secret\'s JSON is not a string' in out, \
        out + err
    noenv = {k: v for k, v in dict(os.environ, **env).items()
             if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    rc, out, err = run_validate(eng, noenv)
    assert rc == 1 and f"${{secret:{js}#n}}: no AWS credentials" in out, out + err
