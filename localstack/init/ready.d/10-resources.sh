#!/usr/bin/env bash
# vidnotes resources, created with the AWS CLI when LocalStack is ready. Idempotent: safe to re-run
# against a running LocalStack (stack.sh runs it itself if the init hook did not report success).
#   buckets: vidnotes-inbox, vidnotes-results, vidnotes-models, vidnotes-training
#   SQS: vidnotes-uploads, dead letters to vidnotes-uploads-dlq after 5 receives
#   S3 notification: s3:ObjectCreated:* on vidnotes-inbox -> vidnotes-uploads (queue policy lets S3 send)
# LocalStack runs this from $FILESYSTEM_ROOT/etc/localstack/init/ready.d (a link to localstack/init).
set -euo pipefail

# Always the stack's dummy account (000000000000): real keys in the caller's environment would make
# LocalStack file the resources under another account id.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_DEFAULT_REGION=${VIDNOTES_REGION:-us-east-1}
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL
EP=${VIDNOTES_AWS_ENDPOINT_URL:-http://127.0.0.1:${VIDNOTES_LOCALSTACK_PORT:-4566}}
aws_() { "${VIDNOTES_AWS_CLI:-aws}" --endpoint-url "$EP" --output text "$@"; }
say() { echo "vidnotes-init: $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

buckets() {
    local b
    for b in vidnotes-inbox vidnotes-results vidnotes-models vidnotes-training; do
        if ! aws_ s3api create-bucket --bucket "$b" >/dev/null 2>"$tmp/$b.err"; then
            grep -q BucketAlreadyOwnedByYou "$tmp/$b.err" || { cat "$tmp/$b.err" >&2; return 1; }
        fi &
    done
    wait_all
}

wait_all() {  # wait for every background job; fail if any failed
    local rc=0 pid
    for pid in $(jobs -p); do wait "$pid" || rc=1; done
    return $rc
}

queues() {
    local dlq_url dlq_arn url arn
    dlq_url=$(aws_ sqs create-queue --queue-name vidnotes-uploads-dlq --query QueueUrl)
    dlq_arn=$(aws_ sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names QueueArn \
        --query Attributes.QueueArn)
    url=$(aws_ sqs create-queue --queue-name vidnotes-uploads --query QueueUrl)
    arn=${dlq_arn%-dlq}
    python3 - "$dlq_arn" "$arn" > "$tmp/queue-attrs.json" <<'PY'
import json, sys
dlq_arn, arn = sys.argv[1:]
bucket_arn = "arn:aws:s3:::vidnotes-inbox"
policy = {"Version": "2012-10-17", "Statement": [{
    "Sid": "vidnotes-inbox-notifications", "Effect": "Allow",
    "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": arn,
    "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn}}}]}
print(json.dumps({
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
    "Policy": json.dumps(policy),
}))
PY
    aws_ sqs set-queue-attributes --queue-url "$url" --attributes "file://$tmp/queue-attrs.json"
    echo "$arn" > "$tmp/queue.arn"
}

SECONDS=0
buckets &
queues &
wait_all
arn=$(cat "$tmp/queue.arn")
cat > "$tmp/notification.json" <<JSON
{"QueueConfigurations": [{"Id": "vidnotes-inbox-uploads", "QueueArn": "$arn",
                          "Events": ["s3:ObjectCreated:*"]}]}
JSON
aws_ s3api put-bucket-notification-configuration --bucket vidnotes-inbox \
    --notification-configuration "file://$tmp/notification.json"
say "buckets, queues and the inbox notification are in place (${SECONDS} s)"
