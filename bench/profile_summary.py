"""Group py-spy raw (collapsed) stacks of signer workers into per-request cost categories.

    .venv/bin/python bench/profile_summary.py DIR_OR_FILES...

Each stack (``frame;frame;... count``) goes to the first category whose pattern occurs in
any of its frames, in the order below; HSM-thread stacks (under ``Hsm._call``) and event-loop
stacks are told apart first. Only on-CPU samples are in py-spy's output (idle threads are
left out), so the shares are shares of the workers' CPU time.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

HSM_THREAD = "Hsm._call ("
# Leaf frames of a thread that waits: py-spy's idle detection lets a few such samples through
# (a thread just woken, queued for the GIL); they are counted apart, not as CPU.
WAITING = (
    "Condition.wait (",
    "Event.wait (",
    "_worker (concurrent/futures/thread.py:81)",
    "Lock.acquire",
    "EpollSelector.select (",
)
# (category, substrings of frames); first match wins.
HSM_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("hsm: keygen + evidence", ("generate_ephemeral (",)),
    ("hsm: destroy + confirm", ("HsmSession.destroy (",)),
    ("hsm: CA signature (C_Sign)", ("HsmEcPrivateKey.sign (",)),
    ("hsm: certificate build (ca/)", ("IssuingCA.issue (",)),
    ("hsm: digest signature", ("sign_digest (",)),
    ("hsm: issued record (build + wait)", ("on_issued (", "_issued_record (")),
    ("hsm: token key lookup", ("token_key (",)),
]
LOOP_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("loop: logging (structlog)", ("structlog/", "logging/")),
    ("loop: token verification", ("idp_adapter/", "joserfc/")),
    ("loop: database (asyncpg)", ("asyncpg/", "signer/storage/")),
    ("loop: JSON + render", ("json/", "as_json (", "json_response (", "read_json (")),
    ("loop: request parsing", ("parse_signature_request (",)),
    ("loop: policy / subject", ("authorize (", "subject_from_attributes (")),
    (
        "loop: thread hop plumbing",
        ("run_in_executor (", "_chain_future", "call_soon_threadsafe (", "Future.set_result ("),
    ),
    ("loop: aiohttp HTTP", ("aiohttp/",)),
    ("loop: asyncio + other", ("",)),
]


def categorise(stack: str) -> str:
    frames = stack.split(";")
    if any(w in frames[-1] for w in WAITING):
        if any("on_issued (" in f for f in frames):
            return "waiting: HSM thread blocked on the 'issued' commit"
        return "waiting: idle threads"
    if any(HSM_THREAD in f for f in frames):
        rules = HSM_RULES
        fallback = "hsm: other (hop, pool, contextvars)"
    elif any(f.startswith("Thread._bootstrap") for f in frames[:1]):
        return "other threads"
    else:
        rules = LOOP_RULES
        fallback = "loop: asyncio + other"
    for name, needles in rules:
        if any(n in f for n in needles for f in frames):
            return name
    return fallback


def summarise(files: list[Path]) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                counts[categorise(stack)] += int(n)
    return counts, sum(counts.values())


def render(counts: Counter[str], total: int) -> str:
    if not total:
        return "  (no samples)"
    rows = []
    waiting = sum(v for k, v in counts.items() if k.startswith("waiting"))
    total -= waiting
    if not total:
        return "  (no on-CPU samples)"
    for side in ("loop", "hsm", "other"):
        part = {k: v for k, v in counts.items() if k.startswith(side)}
        subtotal = sum(part.values())
        if not subtotal:
            continue
        rows.append(f"  {side + ' total':40s} {100 * subtotal / total:5.1f} %")
        for name, n in sorted(part.items(), key=lambda kv: -kv[1]):
            rows.append(f"    {name:38s} {100 * n / total:5.1f} %")
    rows.append(f"  {'on-CPU samples (100 %)':40s} {total}")
    for name, n in sorted(counts.items()):
        if name.startswith("waiting"):
            rows.append(f"  {name} (not CPU): {n} samples")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    files: list[Path] = []
    for arg in argv:
        path = Path(arg)
        files += sorted(path.glob("worker-*.txt")) if path.is_dir() else [path]
    if not files:
        print("usage: profile_summary.py DIR_OR_FILES...", file=sys.stderr)
        return 2
    print(render(*summarise(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
