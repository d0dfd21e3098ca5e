"""The end-to-end pipeline (`wm-jax demo`) and PerDI interpretation (`wm-jax interpret`) commands."""
