"""Partitions: one dynamic partition per ingested batch (never one per video)."""

import dagster as dg

BATCHES = "batches"

batches = dg.DynamicPartitionsDefinition(name=BATCHES)
