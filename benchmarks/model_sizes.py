"""Parameters per component at each family's published configuration (counted on the meta device), and the
weight memory per quantization mode they imply. No download, no memory: runs in seconds on any machine.

    .venv/bin/python benchmarks/model_sizes.py
"""

from __future__ import annotations

from nightshift.renderers.model_sizes import family_parameters
from nightshift.renderers.registry import BYTES_PER_PARAM, REGISTRY, weight_gb


def main() -> None:
    print("| family | component | parameters |")
    print("|---|---|---|")
    for family in REGISTRY:
        for component, count in family_parameters(family).items():
            print(f"| {family} | {component} | {count:,} ({count / 1e9:.3f} B) |")
    modes = list(BYTES_PER_PARAM)
    print()
    print("| family | " + " | ".join(f"{m} (GB)" for m in modes) + " | text encoders bf16 (GB) |")
    print("|---|" + "---|" * (len(modes) + 1))
    for family, entry in REGISTRY.items():
        cells = [f"{weight_gb(entry, mode, text_encoder_resident=False):.1f}" for mode in modes]
        print(f"| {family} | " + " | ".join(cells) + f" | {entry.text_encoder_params_b * 2:.1f} |")


if __name__ == "__main__":
    main()
