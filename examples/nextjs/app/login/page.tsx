"use client";
// Sign-in with Supabase (email and password); the session lands in cookies that the
// server actions read.

import { useRouter } from "next/navigation";
import { useState, type FormEvent } from "react";

import { createClient } from "@/lib/supabase/client";

export default function LoginPage() {
  const router = useRouter();
  const [error, setError] = useState<string | null>(null);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const credentials = { email: String(form.get("email")), password: String(form.get("password")) };
    const signUp = (event.nativeEvent as SubmitEvent).submitter?.getAttribute("value") === "sign-up";
    const supabase = createClient();
    const { error } = signUp
      ? await supabase.auth.signUp(credentials)
      : await supabase.auth.signInWithPassword(credentials);
    if (error) return setError(error.message);
    router.push("/");
    router.refresh();
  }

  return (
    <main>
      <h1>Sign in</h1>
      <form onSubmit={submit}>
        <p>
          <label>
            Email <input name="email" type="email" required autoComplete="email" />
          </label>
        </p>
        <p>
          <label>
            Password <input name="password" type="password" required autoComplete="current-password" />
          </label>
        </p>
        <button type="submit" value="sign-in">
          Sign in
        </button>{" "}
        <button type="submit" value="sign-up">
          Sign up
        </button>
      </form>
      {error ? <p role="alert">{error}</p> : null}
    </main>
  );
}
