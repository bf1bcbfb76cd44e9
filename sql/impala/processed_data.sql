-- Generated from transforms/warehouse.py (TABLES); tests keep it in step.
CREATE TABLE IF NOT EXISTS processed_data (
  source_topic STRING NOT NULL,
  source_partition INT NOT NULL,
  source_offset BIGINT NOT NULL,
  customer_id STRING NOT NULL,
  tsc_id STRING NOT NULL,
  operation STRING NOT NULL,
  payload STRING NOT NULL,
  processed_at TIMESTAMP NOT NULL,
  PRIMARY KEY (source_topic, source_partition, source_offset)
)
PARTITION BY HASH (source_topic, source_partition, source_offset) PARTITIONS 4
STORED AS KUDU;
