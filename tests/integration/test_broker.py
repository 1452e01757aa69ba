"""`connectd broker`: the zero-dependency mock cluster answers kcat and stops
on SIGTERM."""
import signal
import subprocess
import time

from conftest import CONNECTD


def test_broker_serves_kcat_and_stops_on_sigterm(tmp_path):
    bfile = tmp_path / "bootstrap"
    proc = subprocess.Popen([str(CONNECTD), "broker", "--brokers", "3", "--partitions", "3",
                             "--topics", "a,b", "--bootstrap-file", str(bfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = proc.stdout.readline().strip()
        deadline = time.time() + 10
        while not bfile.exists() and time.time() < deadline:
            time.sleep(0.05)
        bootstrap = bfile.read_text().strip()
        assert bootstrap == printed and bootstrap.count(",") == 2
        for hp in bootstrap.split(","):
            assert hp.startswith("127.0.0.1:") or hp.startswith("localhost:"), hp
        meta = subprocess.run(["kcat", "-b", bootstrap, "-L", "-t", "a"], capture_output=True,
                              text=True, timeout=30)
        assert meta.returncode == 0 and "3 partitions" in meta.stdout, meta.stdout + meta.stderr
        data = "".join(f"k{i}:v{i}\n" for i in range(100))
        p = subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", "a", "-K", ":"], input=data,
                           text=True, capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        c = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", "a", "-o", "beginning", "-e",
                            "-q", "-f", "%k=%s\n"], capture_output=True, text=True, timeout=60)
        assert sorted(c.stdout.split()) == sorted(f"k{i}=v{i}" for i in range(100))
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
    assert rc == 0
