// Validates an AsyncAPI document with the AsyncAPI parser (npm @asyncapi/parser); any
// diagnostic of severity error or warning fails.
// Usage: NODE_PATH=<folder with node_modules> node asyncapi-validate.js openapi/asyncapi.yaml
'use strict';
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');

const severities = ['error', 'warning', 'information', 'hint'];

async function main(file) {
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(fs.readFileSync(file, 'utf8'), { source: file });
  const serious = diagnostics.filter((d) => d.severity <= 1);
  for (const d of diagnostics) {
    console.log(`${severities[d.severity]}: ${d.code}: ${d.message} at ${d.path.join('.')}`);
  }
  if (!document || serious.length > 0) {
    console.error(`${file}: ${serious.length} errors or warnings`);
    process.exit(1);
  }
  const channels = document.channels().all().map((c) => c.address());
  const messages = document.allMessages().all().length;
  console.log(`${file}: valid AsyncAPI ${document.version()}; channels ${channels.join(', ')}; ${messages} messages`);
}

main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(1);
});
