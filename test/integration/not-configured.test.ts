import { afterEach, expect, it } from 'vitest';
import { SIGNING_SECRET, startTestBot, type TestBot } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';

/**
 * A gate without a step says why, from the composition root's gate table (the one source of those
 * reasons): on the card, in the gate's summary and in the audit event. Here neither GitHub nor the
 * model is configured, so the run waits at `agent` naming both settings.
 */

let bot: TestBot | undefined;
afterEach(async () => {
  await bot?.stop();
  bot = undefined;
});

it('names the missing settings when the agent gate is not configured', async () => {
  bot = await startTestBot({ name: 'not-configured' });
  const reply = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text: 'acme/docs fix the typo', user_id: 'UALICE', channel_id: 'CDOCS' });
  const runId = /sg-[a-z0-9]{8}/.exec(reply.body)?.[0] ?? '';
  const app = bot.app;
  await eventually(async () => (await app.store.get(runId))?.gates[0]?.notConfigured === true, 'the run waits at agent');
  const summary = (await app.store.get(runId))?.gates[0]?.summary ?? '';
  expect(summary).toMatch(/^not configured: needs GITHUB_TOKEN or a GitHub App .*, and ANTHROPIC_API_KEY/);
  const event = (await app.audit.exportRun(runId)).split('\n').find((line) => line.includes('"gate.not_configured"'));
  expect(event).toMatch(/"reason":"needs GITHUB_TOKEN/);
  await bot.slack.waitFor((s) => s.callsOf('chat.update').some((c) => JSON.stringify(c.body).includes('needs GITHUB_TOKEN')), 10_000, 'the card names the missing setting');
});

it('a run waiting at a gate without a step still ends at its time limit (budgets.maxRunMinutes), with the reason', async () => {
  // 0.02 minutes: 1.2 s. The delayed job at the deadline is what ends it; nothing else wakes the run.
  bot = await startTestBot({ name: 'not-configured-deadline', policy: 'repos:\n  acme/docs: {}\nbudgets: { maxRunMinutes: 0.02 }\n' });
  const reply = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text: 'acme/docs fix the typo', user_id: 'UALICE', channel_id: 'CDOCS' });
  const runId = /sg-[a-z0-9]{8}/.exec(reply.body)?.[0] ?? '';
  const app = bot.app;
  await eventually(async () => (await app.store.get(runId))?.state === 'failed', 'the run failed at its deadline', 15_000);
  expect((await app.store.get(runId))?.outcome).toMatch(/time limit of 0.02 minutes .* while agent was not configured/);
});

it('with only ANTHROPIC_API_KEY, the agent gate names GitHub alone as missing', async () => {
  bot = await startTestBot({ name: 'not-configured-model-only', env: { ANTHROPIC_API_KEY: 'sk-ant-test-key-not-real' } });
  const reply = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text: 'acme/docs fix the typo', user_id: 'UALICE', channel_id: 'CDOCS' });
  const runId = /sg-[a-z0-9]{8}/.exec(reply.body)?.[0] ?? '';
  const app = bot.app;
  await eventually(async () => (await app.store.get(runId))?.gates[0]?.notConfigured === true, 'the run waits at agent');
  expect((await app.store.get(runId))?.gates[0]?.summary).toBe('not configured: needs GITHUB_TOKEN or a GitHub App (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY), or a repository with a local path: in the policy');
  // The start-up summary says the same, and that the model is there.
  const forge = app.setup.find((line) => line.part === 'forge');
  expect(forge).toMatchObject({ state: 'missing' });
  expect(forge?.detail).toContain('GITHUB_TOKEN');
  expect(app.setup.find((line) => line.part === 'model')).toMatchObject({ state: 'configured' });
});

it('/ship clear cancels the caller’s own runs stuck at a gate that is not configured, and nobody else’s', async () => {
  bot = await startTestBot({ name: 'not-configured-clear' });
  const ship = async (user: string) => {
    const reply = await sendSlashCommand(bot?.eventsUrl ?? '', SIGNING_SECRET, { text: 'acme/docs fix the typo', user_id: user, channel_id: 'CDOCS' });
    return /sg-[a-z0-9]{8}/.exec(reply.body)?.[0] ?? '';
  };
  const mine = [await ship('UALICE'), await ship('UALICE')];
  const theirs = await ship('UBOB');
  const app = bot.app;
  for (const runId of [...mine, theirs]) await eventually(async () => (await app.store.get(runId))?.gates[0]?.notConfigured === true, 'the run waits at agent');

  const cleared = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text: 'clear', user_id: 'UALICE', channel_id: 'CDOCS' });
  expect(cleared.body).toContain('Cancelling 2 runs');
  for (const runId of mine) await eventually(async () => (await app.store.get(runId))?.state === 'cancelled', 'the stuck run cancelled');
  expect((await app.store.get(theirs))?.state).not.toBe('cancelled');
  const again = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text: 'clear', user_id: 'UALICE', channel_id: 'CDOCS' });
  expect(again.body).toContain('None of your runs is stuck');
  expect((await app.audit.exportRun(mine[0] ?? '')).split('\n').filter((line) => line.includes('"run.cancel_requested"'))).toHaveLength(1);
});
