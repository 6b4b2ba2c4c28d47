// Plain-node check of the Artillery scripts (no Artillery needed): the processor loads, every
// script has config (target, phases) and scenarios, uses spaces only, and every processor
// function it names (function:, beforeRequest:, connect function:) is exported.
// Usage: node artillery/check.js
'use strict';
const fs = require('fs');
const path = require('path');

const dir = __dirname;
const processor = require(path.join(dir, 'processor.js'));
const problems = [];
const scripts = fs.readdirSync(dir).filter((f) => f.endsWith('.yml'));
if (scripts.length === 0) problems.push('no .yml scripts found');

for (const file of scripts) {
  const text = fs.readFileSync(path.join(dir, file), 'utf8');
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (/^\s*\t/.test(line)) problems.push(`${file}:${i + 1}: tab in indentation`);
    if (/^ +/.test(line) && (line.match(/^ */)[0].length % 2) !== 0) {
      problems.push(`${file}:${i + 1}: odd indentation`);
    }
  });
  for (const key of ['config:', 'scenarios:']) {
    if (!lines.some((l) => l === key)) problems.push(`${file}: no top-level ${key}`);
  }
  for (const key of ['target:', 'phases:']) {
    if (!lines.some((l) => l.trim().startsWith(key))) problems.push(`${file}: no ${key}`);
  }
  const named = [...text.matchAll(/^\s*-?\s*(?:function|beforeRequest|afterResponse):\s*"?([A-Za-z_]\w*)"?\s*$/gm)];
  for (const [, name] of named) {
    if (typeof processor[name] !== 'function') problems.push(`${file}: ${name} is not in processor.js`);
  }
  if (named.length > 0 && !/^\s+processor:\s*\.\/processor\.js\s*$/m.test(text)) {
    problems.push(`${file}: names processor functions but does not load ./processor.js`);
  }
}

if (problems.length > 0) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`artillery: ${scripts.length} scripts and processor.js check out`);
