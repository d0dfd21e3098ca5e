"""Readers and writers for the pipeline's inputs: PLINK genotypes, tables, FA maps, volume store."""
