"""The laptop version of the seed benchmark: the built-in simulator on local Ray, no GPU.

A few concurrencies online and two batch sizes offline, small enough to finish in a minute or two.
Run it with:  raybench run experiments/quickstart.py
"""

from raybench.experiment import Experiment, Offline, Online, SimBackend

experiment = Experiment(
    name="quickstart",
    model="deepseek-ai/DeepSeek-R1",
    backends=(SimBackend(name="sim-h200", timing="engine", gpu="H200", num_gpus=8),),
    online=(Online(concurrency=(4, 16, 32), input_len=512, output_len=64, num_prompts=32),),
    offline=(Offline(batch_sizes=(32, 128), input_len=512, output_len=64),),
    seed=0,
    warmup_requests=1,
)
