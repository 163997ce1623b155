"""``python -m raybench.sim``: the simulator without the rest of raybench's CLI."""

from raybench.sim.command import sim_command

if __name__ == "__main__":
    sim_command(prog_name="python -m raybench.sim")
