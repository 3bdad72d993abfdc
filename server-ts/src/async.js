// Sync-or-async sequencing. A handler that returns synchronously must run in the same turn
// as the frame that called it: its sends join the same batch, and the next frame (or
// message) sees its effects. So the server never awaits a plain value. It chains on a
// promise only when a handler actually returned one. These two helpers do that.

export const isThenable = (v) => v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function'

/** Runs `fn(value)` now, or when `value` settles if it is a promise. */
export const after = (value, fn) => (isThenable(value) ? value.then(fn) : fn(value))
