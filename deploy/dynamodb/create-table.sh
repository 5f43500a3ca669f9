#!/bin/sh
# The coordination table with the AWS CLI, for those who do not use CloudFormation
# (the same table as table.yaml). Usage: deploy/dynamodb/create-table.sh [TABLE_NAME]
set -eu
TABLE="${1:-retry-worker-coordination}"

aws dynamodb create-table \
  --table-name "$TABLE" \
  --billing-mode PAY_PER_REQUEST \
  --attribute-definitions '[{"AttributeName":"pk","AttributeType":"S"},{"AttributeName":"sk","AttributeType":"S"}]' \
  --key-schema '[{"AttributeName":"pk","KeyType":"HASH"},{"AttributeName":"sk","KeyType":"RANGE"}]' \
  --sse-specification '{"Enabled":true}'
aws dynamodb wait table-exists --table-name "$TABLE"
aws dynamodb update-time-to-live \
  --table-name "$TABLE" \
  --time-to-live-specification '{"Enabled":true,"AttributeName":"expires_at"}'
