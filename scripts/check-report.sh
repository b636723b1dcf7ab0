#!/usr/bin/env bash
# Checks report.html files in a real browser (Debian's headless Chromium): the page loads without
# console errors or requests for anything outside itself, every image decodes, and a screenshot of
# it is not blank. With no argument it makes a reduced `mocoop demo` report and checks that.
#
#   scripts/install-system-deps.sh --browser    # once: installs chromium
#   scripts/check-report.sh [REPORT.html ...]   # MOCOOP=path/to/mocoop (default target/debug/mocoop)
#
# Screenshots are left in $SHOTS (default: a temporary folder, printed) to look at.
set -euo pipefail
cd "$(dirname "$0")/.."
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "no chromium: run scripts/install-system-deps.sh --browser" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
shots=${SHOTS:-$(mktemp -d)}
mkdir -p "$shots"

reports=("$@")
if [ ${#reports[@]} -eq 0 ]; then
  mocoop=${MOCOOP:-target/debug/mocoop}
  [ -x "$mocoop" ] || { echo "no $mocoop: build it (cargo test --workspace --no-run) or set MOCOOP" >&2; exit 2; }
  "$mocoop" demo --epochs 2 --shots 2 --test-images 3 --out "$work/demo" >/dev/null 2>"$work/demo.log" \
    || { cat "$work/demo.log" >&2; exit 1; }
  reports=("$work/demo/report/report.html")
fi

# Chromium in a container: no sandbox (root), no GPU, no first-run chores.
chrome() {
  "$browser" --headless=new --no-sandbox --disable-gpu --no-first-run --disable-extensions \
    --hide-scrollbars --user-data-dir="$work/profile" --enable-logging=stderr --v=0 "$@"
}

# The page's own verdict, written into its body by a script appended to a copy of it: how many
# images there are and how many decoded, what it fetched from outside (data: URIs are not
# fetches) and which errors it raised.
probe='<script>
const errors = [];
window.addEventListener("error", e => errors.push(String(e.message || e.type)), true);
window.addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  const fetched = performance.getEntriesByType("resource").map(r => r.name);
  document.body.setAttribute("data-check",
    JSON.stringify({images: images.length, decoded, fetched, errors}));
});
</script>'

failed=0
for report in "${reports[@]}"; do
  [ -f "$report" ] || { echo "FAIL $report: no such file"; failed=1; continue; }
  name=$(basename "$(dirname "$report")")-$(basename "$report" .html)
  probed="$work/$name.probed.html"
  PROBE="$probe" python3 -c 'import os, sys; page = open(sys.argv[1], encoding="utf-8").read()
open(sys.argv[2], "w", encoding="utf-8").write(page.replace("</body>", os.environ["PROBE"] + "</body>"))' \
    "$report" "$probed"
  chrome --virtual-time-budget=5000 --dump-dom "file://$(realpath "$probed")" \
    >"$work/$name.dom" 2>"$work/$name.probe.log"
  shot="$shots/$name.png"
  chrome --virtual-time-budget=5000 --window-size=1280,4000 --screenshot="$shot" \
    "file://$(realpath "$report")" >/dev/null 2>"$work/$name.shot.log"
  python3 - "$work/$name.dom" "$shot" "$work/$name.shot.log" "$work/$name.probe.log" <<'EOF' || failed=1
import html, json, re, struct, sys, zlib

dom, shot, *logs = sys.argv[1:]
problems = []
found = re.search(r'data-check="([^"]*)"', open(dom, encoding="utf-8").read())
if not found:
    problems.append("the page never finished loading (no verdict in the DOM)")
else:
    verdict = json.loads(html.unescape(found.group(1)))
    if verdict["images"] == 0 or verdict["decoded"] != verdict["images"]:
        problems.append(f"{verdict['decoded']} of {verdict['images']} images decoded")
    if verdict["fetched"]:
        problems.append(f"fetched from outside the file: {verdict['fetched']}")
    if verdict["errors"]:
        problems.append(f"page errors: {verdict['errors']}")
for log in logs:
    for line in open(log, encoding="utf-8", errors="replace"):
        if "CONSOLE" in line:
            problems.append(f"console: {line.strip()}")

def pixels(path):
    """Decodes an 8-bit RGB(A) PNG (what Chromium writes) with the standard library."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), f"PNG depth {depth} colour type {colour}"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line)); prev = line
    return w, h, [r[x * bpp:x * bpp + 3] for r in rows[::4] for x in range(0, w, 4)]

try:
    w, h, sample = pixels(shot)
    ink = sum(1 for p in sample if p != b"\xff\xff\xff") / len(sample)
    colours = len(set(sample))
    if ink < 0.02 or colours < 16:
        problems.append(f"screenshot looks blank: {ink:.1%} non-white, {colours} colours")
except Exception as e:  # no screenshot, or not a PNG
    problems.append(f"screenshot {shot}: {e}")
if problems:
    print(f"FAIL {dom}:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"ok   {shot}: {verdict['images']} images decoded, {ink:.0%} of the page inked, {colours} colours")
EOF
done
echo "screenshots: $shots"
exit $failed
