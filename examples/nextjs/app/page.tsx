// The pricing page: plans and packs from tally's GET /api/catalogue, a checkout button
// per price, the signed-in user's credits, and two actions that spend them.

import Link from "next/link";
import type { CataloguePrice } from "tally-client";

import { createClient } from "@/lib/supabase/server";
import { tally } from "@/lib/tally";

import { checkout, signOut, spendCredits, summarize } from "./actions";

export const dynamic = "force-dynamic";

function money(price: CataloguePrice): string {
  const amount = new Intl.NumberFormat("en", { style: "currency", currency: price.currency.toUpperCase() }).format(
    price.amount / 100,
  );
  return price.interval ? `${amount} / ${price.interval}` : amount;
}

function CheckoutButton({ item, price, label }: { item: string; price: CataloguePrice; label: string }) {
  return (
    <form action={checkout}>
      <input type="hidden" name="item" value={item} />
      {price.interval ? <input type="hidden" name="interval" value={price.interval} /> : null}
      <button type="submit">
        {label}: {money(price)}
      </button>
    </form>
  );
}

export default async function PricingPage({ searchParams }: { searchParams: Promise<{ notice?: string }> }) {
  const { notice } = await searchParams;
  const supabase = await createClient();
  const {
    data: { user },
  } = await supabase.auth.getUser();

  const client = tally();
  const catalogue = await client.catalogue();
  if (catalogue.error) throw catalogue.error;
  const { plans, packs, free } = catalogue.data;
  const billing = user ? await client.billing(user.id) : undefined;
  const request = crypto.randomUUID();

  return (
    <main>
      <h1>Pricing</h1>
      {notice ? <p role="status">{notice}</p> : null}
      {user ? (
        <section>
          <p>
            Signed in as {user.email ?? user.id}.{" "}
            {billing?.data
              ? `${billing.data.credits} credits (${billing.data.tier}), ${billing.data.reserved_credits} held.`
              : null}
          </p>
          <form action={spendCredits}>
            <input type="hidden" name="request" value={request} />
            <button type="submit">Export a report (5 credits)</button>
          </form>
          <form action={summarize}>
            <input type="hidden" name="request" value={request} />
            <button type="submit">Summarize (up to 20 credits)</button>
          </form>
          <p>
            <Link href="/billing">Billing and invoices</Link>
          </p>
          <form action={signOut}>
            <button type="submit">Sign out</button>
          </form>
        </section>
      ) : (
        <p>
          <Link href="/login">Sign in</Link> to buy. Everyone starts with {free.credits} free credits.
        </p>
      )}

      <h2>Plans</h2>
      {plans.map((plan) => (
        <div key={plan.id}>
          <h3>{plan.name}</h3>
          <p>{plan.credits.toLocaleString("en")} credits a month</p>
          {plan.prices.map((price) => (
            <CheckoutButton key={price.interval ?? "once"} item={plan.id} price={price} label={`Subscribe to ${plan.name}`} />
          ))}
        </div>
      ))}

      <h2>Credit packs</h2>
      {packs.map((pack) => (
        <div key={pack.id}>
          <h3>{pack.name}</h3>
          {pack.prices.map((price) => (
            <CheckoutButton key={price.currency} item={pack.id} price={price} label={`Buy ${pack.credits.toLocaleString("en")} credits`} />
          ))}
        </div>
      ))}
    </main>
  );
}
