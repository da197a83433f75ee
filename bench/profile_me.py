"""Where the time of the `me` request goes: `shareflow serve` under wrk, sampled by py-spy.

    .venv/bin/pip install py-spy   # not a project dependency
    .venv/bin/python -m bench.profile_me [--seconds 8] [--query '{ me { party { id } } }']

Prints the hottest functions by inclusive and by own time (and keeps the collapsed stacks in
bench/out/ for a flame graph). Not part of `make bench`.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from bench.common import BENCH_DIR, OUT_DIR, VENV_BIN, serve, wrk
from bench.http_me import QUERY, _seed


def summarise(collapsed: Path, top: int) -> str:
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    out = [f"{total} samples", "", "inclusive:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "own:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--query", default=QUERY)
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    OUT_DIR.mkdir(exist_ok=True)
    collapsed = OUT_DIR / "profile-me.collapsed"
    with tempfile.TemporaryDirectory(prefix="shareflow-profile-") as tmp:
        workdir = Path(tmp)
        # As in bench/http_me.py: the rate limit far above the load, or the profile would be of 429s.
        env = {**os.environ, "SHAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'shareflow.db'}",
               "SHAREFLOW_RATE_LIMIT_PER_MINUTE": str(10**9)}
        auth = f"Bearer {_seed(workdir, env)}"
        body = workdir / "request.json"
        body.write_text(json.dumps({"query": args.query}))
        argv = [str(VENV_BIN / "shareflow"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
        with serve(argv, env=env, cwd=workdir, log=OUT_DIR / "profile-shareflow.log") as app:
            load = threading.Thread(target=wrk, args=(app.url + "/graphql",), kwargs=dict(
                connections=32, seconds=args.seconds + 2, script=BENCH_DIR / "post.lua",
                env={"BENCH_BODY_FILE": str(body), "BENCH_AUTH": auth}))
            load.start()
            try:
                subprocess.run([py_spy, "record", "--pid", str(app.proc.pid), "--duration", str(args.seconds),
                                "--rate", "200", "--format", "raw", "--output", str(collapsed), "--nonblocking"],
                               check=True, timeout=args.seconds + 60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            finally:
                load.join()
    print(summarise(collapsed, args.top))


if __name__ == "__main__":
    main()
