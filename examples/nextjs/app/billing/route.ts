// A "Billing" link points here: tally's one-time sign-in link to its billing page
// (tokens never travel in URLs), made with the user's own token.
import { NextResponse } from "next/server";
import { createTallyUser } from "tally-client";

import { createClient } from "@/lib/supabase/server";
import { tallyUrl } from "@/lib/tally";

export async function GET(request: Request) {
  const supabase = await createClient();
  const {
    data: { session },
  } = await supabase.auth.getSession();
  if (!session) return NextResponse.redirect(new URL("/login", request.url));
  const { data, error } = await createTallyUser({ baseUrl: tallyUrl(), accessToken: session.access_token }).handoff();
  if (error) throw error;
  return NextResponse.redirect(data.url, 303);
}
