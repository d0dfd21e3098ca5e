"""The loci report (`wm-jax report`): genomic control, clumping, plots, replication (scored against
a simulated cohort's truth by `wm_jax.truth`), and `report.html`. Import from the modules
(`wm_jax.reporting.build`, `.stats`, `.plots`, `.html`): nothing is re-exported here, so
`wm-jax <any command>` loads SciPy's stats and the plotting stack only when it reports."""
