-- Generated from transforms/warehouse.py (TABLES); tests keep it in step.
CREATE TABLE IF NOT EXISTS tsc_configurations (
  customer_id STRING NOT NULL,
  tsc_id STRING NOT NULL,
  frequency STRING NOT NULL,
  cron_schedule STRING NOT NULL,
  time_zone STRING,
  enabled BOOLEAN NOT NULL,
  config STRING NOT NULL,
  operation STRING NOT NULL,
  source_topic STRING NOT NULL,
  source_partition INT NOT NULL,
  source_offset BIGINT NOT NULL,
  updated_at TIMESTAMP NOT NULL,
  PRIMARY KEY (customer_id, tsc_id)
)
PARTITION BY HASH (customer_id, tsc_id) PARTITIONS 4
STORED AS KUDU;
