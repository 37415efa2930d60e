-- Webhook deliveries refused for their signature, counted per hour (unix seconds at
-- the hour's start) for `tally doctor`. Rows older than two days are pruned as new ones
-- come, so a flood of bad signatures adds to a count and never grows the table.
create table signature_failures (
    hour  bigint primary key,
    count bigint not null
);
