"""``trtllm-serve --backend`` as three eras of NVIDIA/TensorRT-LLM ``tensorrt_llm/commands/serve.py`` declare it.

    seed    the seed's build (9b931c0f, "0.17.post1.dev"): click.Choice(["pytorch"]), default None,
            "Set to 'pytorch' for pytorch path. Default is cpp path." (the TensorRT engine)
    later   click.Choice(["pytorch", "trt"]), default "pytorch"
    1.x     ChoiceWithAlias(["pytorch", "tensorrt", "_autodeploy"], {"trt": "tensorrt"}), default "pytorch"

``flow`` parses an argv's ``--backend`` as that release would (exit 2 on a choice it lacks, as
click does) and says which flow it then serves: "pytorch" or "tensorrt".
"""

from __future__ import annotations

import argparse

RELEASES = {
    "seed": (["pytorch"], None, {}),
    "later": (["pytorch", "trt"], "pytorch", {}),
    "1.x": (["pytorch", "tensorrt", "_autodeploy"], "pytorch", {"trt": "tensorrt"}),
}


def flow(release: str, argv: list[str]) -> str:
    choices, default, aliases = RELEASES[release]
    parser = argparse.ArgumentParser(prog=f"trtllm-serve ({release})", allow_abbrev=False)
    parser.add_argument("--backend", type=lambda v: aliases.get(v, v), choices=choices, default=default)
    backend = parser.parse_known_args(argv)[0].backend
    return {"pytorch": "pytorch", None: "tensorrt", "trt": "tensorrt", "tensorrt": "tensorrt"}[backend]
