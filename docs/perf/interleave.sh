#!/bin/bash
# Interleaved bench runs of several builds: copy each release binary to
# /tmp/perf/bftlog-NAME (here base, preredb, new) and run this script.
cd /tmp/perf
out=/tmp/perf/results.txt
for round in 1 2 3; do
  for b in base preredb new; do
    echo "== $b closed round $round $(date +%T)" >> $out
    ./bftlog-$b bench --seconds 15 --json > /tmp/perf/$b-closed-$round.json 2>/tmp/perf/$b-closed-$round.err
    python3 -c "import json,sys;d=json.load(open('/tmp/perf/$b-closed-$round.json'));print({k:d.get(k) for k in ['entries_per_second','latency_ms','cpu_per_entry']})" >> $out 2>&1
  done
  for b in base preredb new; do
    echo "== $b rate round $round $(date +%T)" >> $out
    ./bftlog-$b bench --seconds 10 --rate 25000 --json > /tmp/perf/$b-rate-$round.json 2>/tmp/perf/$b-rate-$round.err
    python3 -c "import json,sys;d=json.load(open('/tmp/perf/$b-rate-$round.json'));print({k:d.get(k) for k in ['entries_per_second','latency_ms','cpu_per_entry']})" >> $out 2>&1
  done
done
echo DONE >> $out
