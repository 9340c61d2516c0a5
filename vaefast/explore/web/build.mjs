// Bundles the page into the Python package (vaefast/explore/static/explorer.js): users
// need no Node. `make web` runs it after `npm ci`.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  format: 'iife',
  minify: true,
  target: ['chrome100', 'firefox100', 'safari15'],
  outfile: '../static/explorer.js',
  legalComments: 'linked',
  logLevel: 'warning',
});
