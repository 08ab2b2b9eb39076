#!/usr/bin/env bash
# The three marketplace scenarios, played with the exact aitbc-cli syntax of shared/CLI.md
# (ids extracted with grep/cut, as user scripts do):
#   1. AI image generation: listing, bid, accept, settle; an inference job with an image result
#   2. GPU rental + training: a gpu-rental bid, a GPU allocation, a training job on a dataset
#   3. Multi-service pipeline: data processing -> training -> inference, each paid per job
# Balances are printed before and after.
#
# Needs a running devnet (`aitbc-cli devnet up --detach`) whose genesis-ops wallet is in this
# AITBC_HOME, and its password in AITBC_PASSWORD (marketplace and AI commands sign with it).
# Set AITBC_CLI to the binary to use (default: aitbc-cli on PATH).
set -euo pipefail

CLI=${AITBC_CLI:-aitbc-cli}
: "${AITBC_PASSWORD:?set AITBC_PASSWORD to the genesis-ops password (new wallets use it too)}"
PASSWORD=$AITBC_PASSWORD
RUN=${SCENARIO_ID:-$$}
PROVIDER=provider-$RUN
CUSTOMER=customer-$RUN
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

balance() { $CLI balance --name "$1" | grep "^balance:" | cut -d" " -f2; }
escrowed() { $CLI balance --name "$1" | grep "^escrowed:" | cut -d" " -f2; }
show_balances() {
  echo "== balances $1"
  for w in "$PROVIDER" "$CUSTOMER"; do
    echo "$w: balance $(balance "$w") AIT, escrowed $(escrowed "$w") AIT"
  done
}

echo "== wallets"
$CLI create --name "$PROVIDER" --password "$PASSWORD"
$CLI create --name "$CUSTOMER" --password "$PASSWORD"
PROVIDER_ADDR=$($CLI list | grep "^$PROVIDER:" | cut -d" " -f2)
CUSTOMER_ADDR=$($CLI list | grep "^$CUSTOMER:" | cut -d" " -f2)
$CLI send --from genesis-ops --to "$PROVIDER_ADDR" --amount 1000 --password "$PASSWORD"
$CLI send --from genesis-ops --to "$CUSTOMER_ADDR" --amount 1000 --password "$PASSWORD"
show_balances before

echo "== scenario 1: AI image generation"
$CLI marketplace --action create --name "Test AI Service $RUN" --type ai-inference --price 10 \
  --wallet "$PROVIDER" --description "text-to-image generation" --parameters "model:demo-diffusion,max_resolution:1024x1024"
SERVICE=$($CLI marketplace --action list | grep "Test AI Service $RUN" | grep service_id | cut -d" " -f2)
echo "service: $SERVICE"
BID=$($CLI marketplace --action bid --service-id "$SERVICE" --amount 10 --wallet "$CUSTOMER" | grep bid_id | cut -d" " -f2)
echo "bid: $BID"
$CLI marketplace --action pending-bids --service-id "$SERVICE" | grep bid_id
$CLI marketplace --action accept-bid --service-id "$SERVICE" --bid-id "$BID" --wallet "$PROVIDER"
$CLI marketplace --action settle-payment --service-id "$SERVICE" --amount 10 --wallet "$CUSTOMER"
JOB=$($CLI ai-submit --wallet "$CUSTOMER" --type inference --prompt "a lighthouse at dusk, oil painting" \
  --service-id "$SERVICE" --payment 10 --resolution 256x256 | grep job_id | cut -d" " -f2)
echo "job: $JOB"
$CLI ai-status --job-id "$JOB" --wait
$CLI ai-results --job-id "$JOB" --output-dir "$WORK/image"
ls "$WORK/image"
$CLI marketplace --action verify-settlement --service-id "$SERVICE"

echo "== scenario 2: GPU rental + training"
$CLI marketplace --action create --name "GPU Rental $RUN" --type gpu-rental --price 20 --wallet "$PROVIDER" \
  --description "one GPU, leased to the accepted bidder" --parameters "gpus:1,memory_mib:8192,duration_secs:300"
RENTAL=$($CLI marketplace --action list | grep "GPU Rental $RUN" | grep service_id | cut -d" " -f2)
RBID=$($CLI marketplace --action bid --service-id "$RENTAL" --amount 20 --wallet "$CUSTOMER" | grep bid_id | cut -d" " -f2)
$CLI marketplace --action accept-bid --service-id "$RENTAL" --bid-id "$RBID" --wallet "$PROVIDER"
# The accepted gpu-rental bid becomes a lease (allocation id = bid id) made by the scheduler.
for _ in $(seq 1 50); do
  $CLI resource status | grep -q "allocation_id: $RBID" && break
  sleep 0.2
done
$CLI resource status | grep "allocation_id: $RBID"
AGENT=$($CLI resource status | grep "^agent:" | head -1 | cut -d" " -f2)
ALLOC=$($CLI resource allocate --agent-id "$AGENT" --gpu 1 --memory 8192 --duration 120 | grep allocation_id | cut -d" " -f2)
echo "allocation: $ALLOC on $AGENT"
$CLI resource status --agent-id "$AGENT"
printf "x,y\n1,3.1\n2,4.9\n3,7.2\n4,8.8\n5,11.1\n" > "$WORK/train.csv"
TJOB=$($CLI ai-submit --wallet "$CUSTOMER" --type training --dataset "$WORK/train.csv" --payment 20 \
  --gpu-allocated 1 --memory 4096 --batch-size 8 | grep job_id | cut -d" " -f2)
$CLI ai-status --job-id "$TJOB" --wait
$CLI ai-results --job-id "$TJOB" --output-dir "$WORK/model"
$CLI resource deallocate --agent-id "$AGENT" --allocation-id "$ALLOC"
$CLI resource deallocate --agent-id "$AGENT" --allocation-id "$RBID"
$CLI marketplace --action settle-payment --service-id "$RENTAL" --amount 20 --wallet "$CUSTOMER"

echo "== scenario 3: multi-service pipeline"
$CLI marketplace --action create --name "Data Prep $RUN" --type data-processing --price 5 --wallet "$PROVIDER"
$CLI marketplace --action create --name "Trainer $RUN" --type ai-training --price 15 --wallet "$PROVIDER"
PREP=$($CLI marketplace --action search --query "Data Prep $RUN" | grep service_id | cut -d" " -f2)
TRAIN=$($CLI marketplace --action list | grep "Trainer $RUN" | grep service_id | cut -d" " -f2)
P1=$($CLI ai-submit --wallet "$CUSTOMER" --type training --service-id "$PREP" --payment 5 \
  --dataset "$WORK/train.csv" | grep job_id | cut -d" " -f2)
$CLI ai-status --job-id "$P1" --wait
PREP_DIGEST=$($CLI ai-results --job-id "$P1" --output-dir "$WORK/prep" | grep "^output_digest:" | cut -d" " -f2)
P2=$($CLI ai-submit --wallet "$CUSTOMER" --type training --service-id "$TRAIN" --payment 15 \
  --dataset "$WORK/train.csv" --model "prep-${PREP_DIGEST:0:16}" | grep job_id | cut -d" " -f2)
$CLI ai-status --job-id "$P2" --wait
P3=$($CLI ai-submit --wallet "$CUSTOMER" --type inference --service-id "$SERVICE" --payment 10 \
  --prompt "chart of the trained model" --model "pipeline-$RUN" | grep job_id | cut -d" " -f2)
$CLI ai-status --job-id "$P3" --wait
$CLI ai-results --job-id "$P3"

echo "== reports"
$CLI marketplace --action my-listings --wallet "$PROVIDER"
$CLI marketplace --action revenue --wallet "$PROVIDER" --period 1h
VOLUME=$($CLI marketplace --action volume --period 1h | tail -1)
echo "volume (1h): $VOLUME AIT"
$CLI marketplace --action audit --period 1h
$CLI marketplace --action reconcile
show_balances after
