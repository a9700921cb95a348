#!/bin/bash
# Two builds (final, base) alternating, closed loop and half load, with a
# dd oflag=dsync probe of the disk before each half-load run.
cd /tmp/perf
out=/tmp/perf/results3.txt
probe() { dd if=/dev/zero of=/tmp/perf/probe bs=4k count=300 oflag=dsync 2>&1 | tail -1 | awk '{print "fdatasync probe: " $0}' >> $out; }
orders=("final base" "base final" "final base")
for round in 0 1 2; do
  for b in ${orders[$round]}; do
    echo "== $b closed round $((round+1)) $(date +%T)" >> $out
    ./bftlog-$b bench --seconds 15 --json > /tmp/perf/r3-$b-closed-$round.json 2>/dev/null
    python3 -c "import json;d=json.load(open('/tmp/perf/r3-$b-closed-$round.json'));l=d['latency_ms'];print(round(d['entries_per_second']),'p50',round(l['p50'],1),'p99',round(l['p99'],1),'cpu/entry/replica',round(d['cpu_per_entry']['replica_mean_us'],2))" >> $out
  done
  for b in ${orders[$round]}; do
    probe
    echo "== $b rate round $((round+1)) $(date +%T)" >> $out
    ./bftlog-$b bench --seconds 10 --rate 25000 --json > /tmp/perf/r3-$b-rate-$round.json 2>/dev/null
    python3 -c "import json;d=json.load(open('/tmp/perf/r3-$b-rate-$round.json'));l=d['latency_ms'];c=[p['consensus'].get('ms_per_durable_write',0) for p in d['per_replica']];print(round(d['entries_per_second']),'p50',round(l['p50'],1),'p99',round(l['p99'],1),'cpu/entry/replica',round(d['cpu_per_entry']['replica_mean_us'],2),'ms/durable write',round(sum(c)/len(c),2))" >> $out
  done
done
echo DONE >> $out
