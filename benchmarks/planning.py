"""Planning throughput: a generated N-scene script through intake, the rules planner and the
Ollama planner (against the protocol double answering instantly), and render-plan writing.

    .venv/bin/python -m benchmarks.planning --scenes 200
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

from nightshift.agents.intake import read_script
from nightshift.agents.planning import plan_script
from nightshift.agents.prompt_writer import write_render_plan
from nightshift.config import Settings
from nightshift.templating import TemplateSet
from tests.ollama_double import OllamaDouble


def generate_script(scenes: int) -> str:
    parts = ["Title: Benchmark\n\n"]
    for n in range(scenes):
        parts.append(
            f"{'INT' if n % 2 else 'EXT'}. PLACE {n} - {'NIGHT' if n % 3 else 'DAY'}\n\n"
            f"Rain falls on the street. ANA (30s, red coat) runs through the crowd and looks up at the sign.\n\n"
            f"ANA\n(breathless)\nWe are late again, and the train will not wait for us tonight.\n\n"
            f"BEN\nThen we run faster.\n\n"
        )
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script_path = folder / "bench.fountain"
        script_path.write_text(generate_script(args.scenes))
        results = {}
        t0 = time.perf_counter()
        script, decoded = read_script(script_path)
        results["intake"] = time.perf_counter() - t0

        rules_settings = Settings(project_dir=folder, planner={"kind": "rules"})
        t0 = time.perf_counter()
        shotlist = plan_script(script, decoded.sha256, rules_settings)
        results["rules planner"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        write_render_plan(shotlist, "0" * 64, rules_settings.render, TemplateSet())
        results["render plan"] = time.perf_counter() - t0

        double = OllamaDouble().start()
        try:
            llm_settings = Settings(project_dir=folder, planner={"kind": "ollama", "ollama_host": double.url})
            t0 = time.perf_counter()
            plan_script(script, decoded.sha256, llm_settings)
            results["ollama planner (cold)"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            plan_script(script, decoded.sha256, llm_settings)
            results["ollama planner (cached)"] = time.perf_counter() - t0
        finally:
            double.stop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"{args.scenes} scenes, {len(shotlist.shots)} shots")
    for name, seconds in results.items():
        print(f"  {name:26s} {seconds:7.3f} s")
    print(f"  peak RSS                   {peak_mb:7.0f} MB")


if __name__ == "__main__":
    main()
