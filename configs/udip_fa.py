"""The paper's UDIP-FA model: 1x182x218x182 input (here the store's grid, whatever it is), channels
16-32-64-128-256, 128 UDIPs, Adam, reduce-on-plateau, up to 100 epochs.

    wm-jax train --config configs/udip_fa.py --store STORE --workdir runs/udip_fa
"""

from configs.demo import get_config as demo_config


def get_config():
    c = demo_config()
    c.model.input_shape = None  # the store's grid; the paper's is 182x218x182 (UK Biobank FA, MNI 1 mm)
    c.model.channels = (16, 32, 64, 128, 256)
    c.model.latent_dim = 128
    c.batch_size = 8
    c.grad_accum_steps = 1  # k > 1: average k batches' gradients per update (effective batch k x batch_size)
    c.tensorboard = False  # True: TensorBoard scalars in WORKDIR/tensorboard/ beside metrics.jsonl
    c.epochs = 100
    c.learning_rate = 3e-4
    c.schedule = "plateau"
    c.weight_decay = 0.0  # > 0: AdamW's decoupled decay of the convolutional kernels (biases, norms, linear path not)
    return c
