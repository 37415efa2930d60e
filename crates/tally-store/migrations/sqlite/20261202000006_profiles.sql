-- The guide's `profiles` shape, read from tally's accounts (SQLite views are read-only).
create view profiles as
    select user_id as id,
           tier,
           plan_credits + topup_credits as credits,
           stripe_customer_id,
           datetime(updated_at, 'unixepoch') as updated_at
    from accounts;
