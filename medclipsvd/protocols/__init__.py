"""The paper's protocols: run planning, sharding, aggregation into tables and plots."""
