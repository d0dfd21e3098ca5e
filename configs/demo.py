"""UDIP autoencoder at demo size on CPU (e.g. the demo preset's 48x56x48): same code as the paper's,
smaller channels. The input shape is the store's grid unless set.

wm-jax train --config configs/demo.py --store STORE --workdir runs/demo [--config.epochs=3]
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict()
    c.model.input_shape = None  # None: the store's grid; set, it must equal that grid
    c.model.channels = (8, 16, 32, 64)
    c.model.latent_dim = 32
    c.model.compute_dtype = "float32"
    c.model.linear_path = False  # True: a linear path started from PCA of the training volumes
    c.linear_path_lr_scale = 0.03  # the linear path learns at this fraction of the learning rate
    c.seed = 0
    c.batch_size = 8
    c.epochs = 3
    c.learning_rate = 1e-3
    c.schedule = "cosine"  # or "plateau" (the paper's reduce-on-plateau)
    c.weight_decay = 0.0  # > 0: AdamW's decoupled decay of the convolutional kernels (biases, norms, linear path not)
    c.val_fraction = 0.1
    c.val_every = 0  # steps between validations inside an epoch (each checkpointed); 0: at epoch ends only
    c.patience = 0  # stop early after this many validations in a row without a new best; 0: never
    c.log_every = 10
    c.keep = 3
    c.max_subjects = 0  # 0 = every subject in the store
    c.grad_accum_steps = 1  # k > 1: average k batches' gradients per update (effective batch k x batch_size)
    c.tensorboard = False  # True: TensorBoard scalars in WORKDIR/tensorboard/ beside metrics.jsonl
    return c
