-- Generated from transforms/warehouse.py (TABLES); tests keep it in step.
CREATE TABLE IF NOT EXISTS tsc_configurations (
  customer_id TEXT NOT NULL,
  tsc_id TEXT NOT NULL,
  frequency TEXT NOT NULL,
  cron_schedule TEXT NOT NULL,
  time_zone TEXT,
  enabled INTEGER NOT NULL,
  config TEXT NOT NULL,
  operation TEXT NOT NULL,
  source_topic TEXT NOT NULL,
  source_partition INTEGER NOT NULL,
  source_offset INTEGER NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (customer_id, tsc_id)
);
