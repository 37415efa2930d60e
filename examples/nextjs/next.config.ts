import path from "node:path";
import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  // tally-client is linked from ../../clients/typescript: let the bundler see the repo.
  turbopack: { root: path.join(__dirname, "../..") },
  outputFileTracingRoot: path.join(__dirname, "../.."),
};

export default nextConfig;
