#!/usr/bin/env python3
"""Creates the onboarding platform's AWS resources on an AWS-compatible
endpoint (moto on loopback for `make demo` and the end-to-end test), the way
CloudFormation would in an account: the seven DynamoDB tables (TTL on
policy-recommendations), the three SNS topics, and one SQS queue per topic
subscribed to it so what SNS delivered can be read back.

  onboarding-aws.py ENDPOINT [--prefix P] [--env FILE] [--dump OUT.json] [--clear]

Idempotent: what exists is kept.  --env writes the variables the pipeline
files read (table names, topic ARNs, endpoints) as KEY=value lines; --prefix
makes every name unique (tests run side by side on one moto).  --dump writes
every table's items and every queue's messages (consumed) as JSON instead;
with --clear, the tables are emptied afterwards (a demo run starts clean).
Uses boto3 from the venv scripts/install-deps makes.
"""
import argparse
import json
import sys
import time

import boto3
from botocore.config import Config

REGION = "eu-west-1"

# name -> (env variable the pipelines read, key attribute, TTL attribute)
TABLES = {
    "users": ("USERS_TABLE", "customerId", None),
    "applications": ("APPLICATIONS_TABLE", "applicationId", None),
    "ai-results": ("AI_RESULTS_TABLE", "eventId", None),
    "kyc-results": ("KYC_RESULTS_TABLE", "applicationId", None),
    "policy-recommendations": ("POLICY_RECOMMENDATIONS_TABLE", "customerId", "expiresAt"),
    "audit-logs": ("AUDIT_LOGS_TABLE", "eventId", None),
    "kafka-events": ("KAFKA_EVENTS_TABLE", "eventId", None),
}
# name -> env variable of its ARN
TOPICS = {
    "kyc-compliance-alerts": "KYC_ALERT_TOPIC_ARN",
    "customer-notifications": "CUSTOMER_EMAIL_TOPIC_ARN",
    "support-alerts": "SUPPORT_ALERT_TOPIC_ARN",
}


def clients(endpoint):
    kw = dict(endpoint_url=endpoint, region_name=REGION,
              config=Config(retries={"max_attempts": 10, "mode": "standard"}))
    return boto3.client("dynamodb", **kw), boto3.client("sns", **kw), boto3.client("sqs", **kw)


def create(endpoint, prefix):
    ddb, sns, sqs = clients(endpoint)
    env = {"DYNAMODB_ENDPOINT": endpoint, "SNS_ENDPOINT": endpoint, "AWS_REGION": REGION}
    existing = set(ddb.list_tables().get("TableNames", []))
    for name, (var, key, ttl) in TABLES.items():
        table = prefix + name
        env[var] = table
        if table not in existing:
            ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": key, "KeyType": "HASH"}])
            ddb.get_waiter("table_exists").wait(TableName=table)
            if ttl:
                ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": ttl})
    for name, var in TOPICS.items():
        arn = sns.create_topic(Name=prefix + name)["TopicArn"]
        env[var] = arn
        qurl = sqs.create_queue(QueueName=prefix + name + "-inspect")["QueueUrl"]
        qarn = sqs.get_queue_attributes(QueueUrl=qurl, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        subs = sns.list_subscriptions_by_topic(TopicArn=arn).get("Subscriptions", [])
        if not any(s["Endpoint"] == qarn for s in subs):
            # The SNS envelope (not raw delivery): Subject and MessageAttributes
            # stay visible to whoever reads the queue.
            sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)
        env[var.replace("_TOPIC_ARN", "_QUEUE_URL")] = qurl
    return env


def scan_all(ddb, table):
    items, kw = [], {}
    while True:
        page = ddb.scan(TableName=table, ConsistentRead=True, **kw)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def drain_queue(sqs, url, settle_s=1.0):
    """Every message now in the queue (deleted as read), as parsed SNS envelopes."""
    out, quiet_since = [], time.time()
    while time.time() - quiet_since < settle_s:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                MessageAttributeNames=["All"], AttributeNames=["All"])
        msgs = r.get("Messages", [])
        if not msgs:
            time.sleep(0.1)
            continue
        quiet_since = time.time()
        for m in msgs:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


def dump(endpoint, prefix):
    ddb, sns, sqs = clients(endpoint)
    res = {"tables": {}, "queues": {}}
    for name in TABLES:
        res["tables"][name] = scan_all(ddb, prefix + name)
    for name in TOPICS:
        url = sqs.get_queue_url(QueueName=prefix + name + "-inspect")["QueueUrl"]
        res["queues"][name] = drain_queue(sqs, url)
    return res


def clear(endpoint, prefix):
    ddb, _, _ = clients(endpoint)
    for name, (_, key, _) in TABLES.items():
        for item in scan_all(ddb, prefix + name):
            ddb.delete_item(TableName=prefix + name, Key={key: item[key]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--env", help="write KEY=value lines here")
    ap.add_argument("--dump", help="write tables and queue messages here as JSON")
    ap.add_argument("--clear", action="store_true", help="with --dump: empty the tables after")
    a = ap.parse_args()
    if a.dump:
        with open(a.dump, "w") as f:
            json.dump(dump(a.endpoint, a.prefix), f, indent=1)
        if a.clear:
            clear(a.endpoint, a.prefix)
        return 0
    env = create(a.endpoint, a.prefix)
    text = "".join(f"{k}={v}\n" for k, v in sorted(env.items()))
    if a.env:
        with open(a.env, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
