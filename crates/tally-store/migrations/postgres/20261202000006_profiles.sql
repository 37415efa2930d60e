-- The guide's `profiles` shape (id, tier, credits, stripe_customer_id, updated_at), read
-- from tally's accounts, for apps that read billing state from SQL (docs/MIGRATING.md).
create view profiles as
    select user_id as id,
           tier,
           plan_credits + topup_credits as credits,
           stripe_customer_id,
           to_timestamp(updated_at) as updated_at
    from accounts;

-- A view of one table is updatable in Postgres; credits change only through tally's
-- ledger, so every write through the view is refused.
create function profiles_are_read_only() returns trigger language plpgsql as $$
begin
    raise exception 'profiles is a read-only view of tally''s accounts: change credits through tally';
end $$;
create trigger profiles_read_only instead of insert or update or delete on profiles
    for each row execute function profiles_are_read_only();
