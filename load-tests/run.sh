#!/usr/bin/env bash
# Reliefline benchmarks, one command each:
#
#   load-tests/run.sh [surge|status|lookup|fanout|all] [--postgres] [--duration SECS] [--subscribers N] [more]
#
# Builds the release service and the load generator, then runs the scenario: the generator
# starts `target/release/reliefline serve` itself (a temp data dir, free loopback ports, env
# overrides), waits for /readyz, drives it, stops it with SIGTERM, checks that no acknowledged
# report is missing from the store and prints a summary. Exit status 1 if one is.
# `target/release/examples/loadtest help` lists every option.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=all
if [[ $# -gt 0 && $1 != -* ]]; then
    scenario=$1
    shift
fi
case $scenario in
    surge | status | lookup | fanout | all) ;;
    *)
        echo "usage: $0 [surge|status|lookup|fanout|all] [--postgres] [--duration SECS] [--subscribers N]" >&2
        exit 2
        ;;
esac

# One cargo invocation for both, so they share one feature resolution and one build.
cargo build --release --quiet --bin reliefline --example loadtest
exec target/release/examples/loadtest "$scenario" --service-bin target/release/reliefline "$@"
