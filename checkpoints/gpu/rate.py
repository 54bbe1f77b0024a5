"""Steps per second of a probe run, from its train.jsonl (log lines after the first)."""
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"g_loss"' in l]
if len(rows) < 3:
    print(0.0); sys.exit()
a, b = rows[1], rows[-1]
print(f"{(b['step'] - a['step']) / max(b['time'] - a['time'], 1e-6):.3f}")
