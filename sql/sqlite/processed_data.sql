-- Generated from transforms/warehouse.py (TABLES); tests keep it in step.
CREATE TABLE IF NOT EXISTS processed_data (
  source_topic TEXT NOT NULL,
  source_partition INTEGER NOT NULL,
  source_offset INTEGER NOT NULL,
  customer_id TEXT NOT NULL,
  tsc_id TEXT NOT NULL,
  operation TEXT NOT NULL,
  payload TEXT NOT NULL,
  processed_at TEXT NOT NULL,
  PRIMARY KEY (source_topic, source_partition, source_offset)
);
