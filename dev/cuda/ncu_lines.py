# Per source line of one kernel: its executed SASS instructions and warp-stall samples, from ncu's
# per-instruction counts joined in order to nvdisasm's line table (build with -lineinfo). On the GPU machine:
#   ncu -k regex:NAME --launch-skip 1 -c 1 --set full -o /tmp/k BINARY ARGS
#   ncu --import /tmp/k.ncu-rep --page source --csv --print-source sass > k.csv
#   (cd /tmp && cuobjdump -xelf all BINARY && for f in *.cubin; do nvdisasm -g -c $f; done) > sass.txt
#   python3 dev/cuda/ncu_lines.py k.csv sass.txt MANGLED_NAME UNITS
# UNITS divides the counts (e.g. warps x chunks, for instructions per warp per chunk).
import csv, re, sys, collections
csv_path, sass_path, name, units = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
text = open(sass_path).read().split('\n')
on, cur, locs, ops = False, '?', [], []
for ln in text:
    if re.match(r'\s*\.section\s+\.text\.', ln):
        on = ('.text.' + name + ',') in ln
        continue
    if not on: continue
    m = re.search(r'//## File "([^"]+)", line (\d+)', ln)
    if m: cur = m.group(1).split('/')[-1] + ':' + m.group(2); continue
    m = re.search(r'/\*([0-9a-f]{4,})\*/\s+(.*?);', ln)
    if m: locs.append(cur); ops.append(m.group(2))
rows = list(csv.reader(open(csv_path)))
hdr = rows[1]; data = [r for r in rows[2:] if len(r) >= len(hdr)]
ix = {h: i for i, h in enumerate(hdr)}
print(name, 'sass', len(locs), 'csv', len(data))
stall_cols = [h for h in hdr if h.startswith('stall_') and 'Not Issued' not in h]
per, samp, opc, stalls = collections.Counter(), collections.Counter(), collections.Counter(), collections.Counter()
for loc, r in zip(locs, data):
    n = int(r[ix['Instructions Executed']] or 0)
    per[loc] += n; samp[loc] += int(r[ix['Warp Stall Sampling (All Samples)']] or 0)
    src = r[ix['Source']].strip().split(); op = (src[1] if src[0].startswith('@') else src[0]).split('.')[0]
    opc[op] += n
    for c in stall_cols: stalls[c] += int(r[ix[c]] or 0)
tot, ts = sum(per.values()), max(1, sum(samp.values()))
print('instructions per unit', round(tot / units, 1))
print(' '.join(f'{o}:{n / units:.0f}' for o, n in opc.most_common(25)))
st = max(1, sum(stalls.values()))
print(' '.join(f'{c[6:]}:{100 * v / st:.1f}' for c, v in stalls.most_common(10)))
for k, v in per.most_common(40): print(f'{v / units:8.1f} {100 * samp[k] / ts:5.1f}% {k}')
