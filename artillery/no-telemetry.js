// Preloaded with NODE_OPTIONS=--require: makes Artillery's telemetry client unloadable, so a
// run makes no outside call (ARTILLERY_DISABLE_TELEMETRY alone still tries one, ~15 s here).
'use strict';
const Module = require('module');
const load = Module._load;
Module._load = function (request, ...rest) {
  if (request === 'posthog-node') {
    throw new Error('telemetry disabled for Switchboard runs');
  }
  return load.call(this, request, ...rest);
};
