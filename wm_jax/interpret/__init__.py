"""Perturbation-based decoder interpretation (PerDI): which white matter each UDIP moves.

For n subjects' codes z_i and each dimension d, the decoder's output is compared between z_i and
z_i + s_d e_d (s_d the standard deviation of UDIP d over the table): a voxel-wise paired t across
subjects, |t| inside the brain mask, Gaussian smoothing (FWHM 3 mm by default). Per dimension the
top 1% voxels are tested for enrichment in each atlas tract: enrichment = (share of the top voxels in
the tract) / (share of mask voxels in the tract), with a permutation p-value. Drawing random voxel
sets of the same size from the mask and counting those in the tract follows the hypergeometric
law exactly, so the permutations are drawn from it directly (same test, no voxel loop).

The decoder runs on the device in fixed-shape chunks of (dimensions x subjects); only per-voxel
sums and sums of squares come back to the host.

Modules: `maths` (the paired t maps, smoothing, tract enrichment), `inputs` (the UDIPs, the
checkpoint's decoder, the atlas), `plots` (the figures' titles), `scoring` (the match with a
simulated cohort's planted patterns), `run` (`wm-jax interpret`: all of them, the outputs)."""
