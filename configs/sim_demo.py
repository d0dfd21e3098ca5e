"""Simulator preset `demo`: 2,000 subjects at 48x56x48, a few minutes on 2 CPU cores.

wm-jax simulate --config configs/sim_demo.py --out demo_data
"""

from configs.sim_common import base_config


def get_config():
    return base_config()
