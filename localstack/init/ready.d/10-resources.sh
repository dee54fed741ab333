#!/usr/bin/env bash
# vidnotes resources, created with the AWS CLI when LocalStack is ready. Idempotent: safe to re-run
# against a running LocalStack (stack.sh runs it itself if the init hook did not report success).
#   buckets: vidnotes-inbox, vidnotes-results, vidnotes-models, vidnotes-training
#   SQS: vidnotes-uploads, dead letters to vidnotes-uploads-dlq after 5 receives
#   S3 notification: s3:ObjectCreated:* on vidnotes-inbox -> vidnotes-uploads (queue policy lets S3 send)
# Names, settings and documents come from infra/resources.py, which infra/deploy.py uses for AWS too.
# LocalStack runs this from $FILESYSTEM_ROOT/etc/localstack/init/ready.d (a link to localstack/init).
set -euo pipefail

# Always the stack's dummy account (000000000000): real keys in the caller's environment would make
# LocalStack file the resources under another account id.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_DEFAULT_REGION=${VIDNOTES_REGION:-us-east-1}
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL
EP=${VIDNOTES_AWS_ENDPOINT_URL:-http://127.0.0.1:${VIDNOTES_LOCALSTACK_PORT:-4566}}
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.." && pwd)
aws_() { "${VIDNOTES_AWS_CLI:-aws}" --endpoint-url "$EP" --output text "$@"; }
resources() { python3 "$ROOT/infra/resources.py" "$@"; }
say() { echo "vidnotes-init: $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# BUCKETS, INBOX, QUEUE, DLQ
eval "$(resources shell)"

buckets() {
    local b
    for b in $BUCKETS; do
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
    dlq_url=$(aws_ sqs create-queue --queue-name "$DLQ" --query QueueUrl)
    resources dlq-attributes > "$tmp/dlq-attrs.json"
    aws_ sqs set-queue-attributes --queue-url "$dlq_url" --attributes "file://$tmp/dlq-attrs.json" &
    dlq_arn=$(aws_ sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names QueueArn \
        --query Attributes.QueueArn)
    url=$(aws_ sqs create-queue --queue-name "$QUEUE" --query QueueUrl)
    arn=${dlq_arn%:*}:$QUEUE
    resources queue-attributes "$dlq_arn" "$arn" > "$tmp/queue-attrs.json"
    aws_ sqs set-queue-attributes --queue-url "$url" --attributes "file://$tmp/queue-attrs.json"
    wait_all
    echo "$arn" > "$tmp/queue.arn"
}

SECONDS=0
buckets &
queues &
wait_all
resources notification "$(cat "$tmp/queue.arn")" > "$tmp/notification.json"
aws_ s3api put-bucket-notification-configuration --bucket "$INBOX" \
    --notification-configuration "file://$tmp/notification.json"
say "buckets, queues and the inbox notification are in place (${SECONDS} s)"
