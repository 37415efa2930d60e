"use server";
// Server actions: checkout with the user's own token, spending credits with the
// host-app key. tally's user id is Supabase's user id (the token's `sub`).

import { revalidatePath } from "next/cache";
import { redirect } from "next/navigation";
import { InsufficientCredits, type Interval } from "tally-client";

import { createClient } from "@/lib/supabase/server";
import { tally } from "@/lib/tally";

/** The checkout button: tally makes a Stripe Checkout Session for the item; we follow its URL. */
export async function checkout(formData: FormData): Promise<void> {
  const supabase = await createClient();
  // The access token goes to tally, which checks its signature (AUTH_JWT_SECRET): the
  // unverified cookie session is enough here.
  const {
    data: { session },
  } = await supabase.auth.getSession();
  if (!session) redirect("/login");

  const item = String(formData.get("item") ?? "");
  const asked = formData.get("interval");
  const interval: Interval | undefined = asked === "month" || asked === "year" ? asked : undefined;
  // tally sends no CORS headers, so the browser asks us and we ask tally.
  const { data, error } = await tally()
    .asUser(session.access_token)
    .checkout({ item, ...(interval ? { interval } : {}) });
  if (error) redirect(`/?notice=${encodeURIComponent(`checkout failed: ${error.message}`)}`);
  redirect(data.url);
}

async function signedInUserId(): Promise<string> {
  const supabase = await createClient();
  const {
    data: { user },
  } = await supabase.auth.getUser(); // verified by Supabase
  if (!user) redirect("/login");
  return user.id;
}

/**
 * A fixed-price action: 5 credits. The form carries a request id made when the page
 * was rendered, so a double-submitted form spends once.
 */
export async function spendCredits(formData: FormData): Promise<void> {
  const userId = await signedInUserId();
  const request = String(formData.get("request") ?? crypto.randomUUID());
  const { error } = await tally().spend({
    userId,
    amount: 5,
    reason: "example: export a report",
    idempotencyKey: `export:${request}`,
  });
  if (error instanceof InsufficientCredits) {
    redirect(`/?notice=${encodeURIComponent(`that costs ${error.needed}; you have ${error.available}`)}`);
  }
  if (error) throw error;
  revalidatePath("/");
  redirect("/?notice=spent%205%20credits");
}

/**
 * A metered action: hold 20 credits, do the work, pay what it used. If the work
 * throws, the hold is released and nothing is spent.
 */
export async function summarize(formData: FormData): Promise<void> {
  const userId = await signedInUserId();
  const request = String(formData.get("request") ?? crypto.randomUUID());
  const { data, error } = await tally().withCredits(
    userId,
    20,
    async () => {
      const words = 1 + Math.floor(Math.random() * 400); // stands in for a model call's usage
      return { used: Math.ceil(words / 20), result: `a summary of ${words} words` };
    },
    { idempotencyKey: `summarize:${request}`, ttlSeconds: 120 },
  );
  if (error instanceof InsufficientCredits) {
    redirect(`/?notice=${encodeURIComponent(`a summary may cost ${error.needed}; you have ${error.available}`)}`);
  }
  if (error) throw error;
  revalidatePath("/");
  redirect(`/?notice=${encodeURIComponent(`${data.result}: ${data.used} credits`)}`);
}

export async function signOut(): Promise<void> {
  const supabase = await createClient();
  await supabase.auth.signOut();
  redirect("/");
}
