"""A UK-Biobank-like synthetic cohort: coalescent genotypes, brain-shaped FA maps, planted effects."""
