-- created of the newest payment that funded the plan bucket: a late payment of another
-- subscription must not displace it
alter table accounts add column funded_at bigint not null default 0;
