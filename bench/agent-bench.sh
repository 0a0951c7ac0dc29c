#!/usr/bin/env bash
# agent-bench.sh — throughput and memory of hubshift-agent (not a test).
#
# What it does:
#   1. generates a 512 MiB appdata-like tree under $BENCH_DIR (default
#      /tmp/hubshift-bench): JSON configuration/project files (~192 MiB),
#      SQLite-like 4 KiB pages with headers, repeated rows and some random
#      bytes (~192 MiB), and incompressible blobs (~128 MiB);
#   2. times GNU `tar -czf` of that tree (gzip default level 6);
#   3. builds hubshift-agent and agent/examples/bench_client.rs in --release,
#      starts the agent over mTLS on loopback with that tree as appdata, and
#      times Backup (the agent writes <state>/backups/bench.tar.gz at
#      hubshift_common::archive::BACKUP_LEVEL = 1, SHA-256 in the same pass);
#   4. times an InstallRuntime upload of a 256 MiB incompressible runtime
#      archive (tar.gz) over mTLS: stream, hash, size/sha check and unpack
#      into runtimes/bench-1/ (the whole call);
#   5. reads the agent's peak RSS (VmHWM from /proc/<pid>/status).
# Goals: backup >= 2x GNU tar, upload >= 300 MB/s, peak RSS <= 64 MiB.
#
# Usage: bench/agent-bench.sh            (from the workspace root)
#        BENCH_DIR=/somewhere bench/agent-bench.sh
# Leaves the generated tree for reruns; delete $BENCH_DIR when done.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-/tmp/hubshift-bench}
TREE=$BENCH_DIR/appdata
mkdir -p "$BENCH_DIR"

if [ ! -f "$BENCH_DIR/.tree-done" ]; then
  echo "generating 512 MiB appdata-like tree in $TREE ..."
  rm -rf "$TREE"
  python3 - "$TREE" <<'PY'
import json, os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
MiB = 1024 * 1024
def fill(path, size, make):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            b = make()
            f.write(b)
            written += len(b)
# JSON: 96 project files of 2 MiB
for i in range(96):
    def make(i=i):
        items = [{"id": rnd.randrange(10**9), "name": f"pipeline-{i}-{k}", "enabled": k % 3 == 0,
                  "topic": f"plant/{k % 17}/line/{k % 5}/tag{rnd.randrange(1000)}",
                  "value": rnd.random(), "unit": ["degC", "bar", "rpm", "kWh"][k % 4]} for k in range(200)]
        return json.dumps({"items": items}, indent=2).encode()
    fill(f"{root}/projects/p{i // 16}/config-{i}.json", 2 * MiB, make)
# SQLite-like: 12 files of 16 MiB, 4 KiB pages
for i in range(12):
    def page(i=i):
        hdr = bytes([13, 0, 0, 0, 40, 15, 200, 0]) + rnd.randrange(2**32).to_bytes(4, "big")
        rows = b"".join(b"%08d|tag%04d|%.6f|GOOD;" % (rnd.randrange(10**8), rnd.randrange(10**4), rnd.random()) for _ in range(80))
        noise = os.urandom(512)
        body = (hdr + rows + noise)[:4096]
        return body + bytes(4096 - len(body))
    fill(f"{root}/storeforward/sf-{i}.db", 16 * MiB, page)
# incompressible: 8 blobs of 16 MiB
for i in range(8):
    fill(f"{root}/blobs/blob-{i}.bin", 16 * MiB, lambda: os.urandom(MiB))
PY
  # runtime archive for the upload: 256 MiB incompressible, tar.gz
  mkdir -p "$BENCH_DIR/runtime-src/lib"
  head -c $((256 * 1024 * 1024)) /dev/urandom > "$BENCH_DIR/runtime-src/lib/runtime.jar"
  tar -C "$BENCH_DIR/runtime-src" -czf "$BENCH_DIR/runtime.tar.gz" lib
  touch "$BENCH_DIR/.tree-done"
fi
TREE_BYTES=$(du -sb "$TREE" | cut -f1)
echo "tree: $TREE_BYTES bytes"

sync
echo "timing GNU tar -czf ..."
T0=$(date +%s.%N)
tar -C "$(dirname "$TREE")" -czf "$BENCH_DIR/gnu.tar.gz" "$(basename "$TREE")"
T1=$(date +%s.%N)
TAR_SECS=$(echo "$T1 - $T0" | bc -l)
TAR_OUT=$(stat -c %s "$BENCH_DIR/gnu.tar.gz")
rm -f "$BENCH_DIR/gnu.tar.gz"

echo "building (release) ..."
cargo build --release -q -p hubshift-agent --bin hubshift-agent --example bench_client
WORK=$BENCH_DIR/work
rm -rf "$WORK"; mkdir -p "$WORK"
OUT=$(./target/release/examples/bench_client ./target/release/hubshift-agent "$TREE" "$BENCH_DIR/runtime.tar.gz" "$WORK")
echo "$OUT"
get() { echo "$OUT" | sed -n "s/^$1=//p"; }
BK_SECS=$(get backup_secs); BK_BYTES=$(get backup_bytes)
UP_BYTES=$(get upload_bytes); UP_SECS=$(get upload_secs); RSS=$(get rss_peak_kib)
tar -tzf "$(get backup_path)" > /dev/null && echo "agent backup lists fine with GNU tar"
rm -rf "$WORK"

printf '\n%-34s %10s %12s %10s\n' "" "seconds" "MB/s(input)" "out MiB"
printf '%-34s %10.2f %12.1f %10.1f\n' "GNU tar -czf (gzip -6)" "$TAR_SECS" "$(echo "$TREE_BYTES/$TAR_SECS/1000000" | bc -l)" "$(echo "$TAR_OUT/1048576" | bc -l)"
printf '%-34s %10.2f %12.1f %10.1f\n' "agent Backup (level 1 + sha256)" "$BK_SECS" "$(echo "$TREE_BYTES/$BK_SECS/1000000" | bc -l)" "$(echo "$BK_BYTES/1048576" | bc -l)"
printf '%-34s %10.2f %12.1f\n' "agent InstallRuntime (256 MiB)" "$UP_SECS" "$(echo "$UP_BYTES/$UP_SECS/1000000" | bc -l)"
printf 'backup speed-up vs GNU tar: %.2fx (goal >= 2x)\n' "$(echo "$TAR_SECS/$BK_SECS" | bc -l)"
printf 'upload: %.0f MB/s (goal >= 300)\n' "$(echo "$UP_BYTES/$UP_SECS/1000000" | bc -l)"
printf 'agent peak RSS (VmHWM): %.1f MiB (goal <= 64)\n' "$(echo "$RSS/1024" | bc -l)"
