/**
 * The fixed SHIPGATE_AUDIT_KEY of the tests (64 hex digits = 32 bytes), so
 * that a test's own audit log and the bot it starts verify each other's events.
 */
export const TEST_AUDIT_KEY = '5e1f0c7a9b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f';

/** TEST_AUDIT_KEY decoded, as createAuditLog takes it. */
export const TEST_AUDIT_KEY_BYTES: Buffer = Buffer.from(TEST_AUDIT_KEY, 'hex');
