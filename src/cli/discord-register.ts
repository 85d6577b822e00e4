import { isEntryModule } from './entry.js';
import type { Writable } from 'node:stream';
import { REST } from '@discordjs/rest';
import { Routes } from 'discord-api-types/v10';
import { z } from 'zod';
import { restBase } from '../adapters/discord/discord-chat.js';
import { shipCommandDefinition } from '../adapters/discord/discord-commands.js';
import { ConfigError, loadConfig } from '../config/config.js';

/**
 * `npm run discord:register` (SPEC §2): registers the `/ship` application command with its
 * sub-commands for the application in DISCORD_APPLICATION_ID — in the server DISCORD_GUILD_ID when
 * set (usable at once), else globally (Discord may take a while to show it). A PUT replaces the
 * application's commands as a whole, so running it again is safe. The command name comes from the
 * policy's `command` (default `/ship`).
 */

const registeredSchema = z.array(z.object({ id: z.string(), name: z.string() }));

export async function main(
  env: Record<string, string | undefined>,
  out: { stdout: Writable; stderr: Writable },
): Promise<number> {
  let config;
  try {
    config = loadConfig(env);
  } catch (error) {
    out.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    return error instanceof ConfigError ? 2 : 1;
  }
  const discord = config.discord;
  if (discord === undefined) {
    out.stderr.write(
      'discord:register needs DISCORD_PUBLIC_KEY, DISCORD_BOT_TOKEN and DISCORD_APPLICATION_ID (see README, "Connect Discord").\n',
    );
    return 2;
  }
  const rest = new REST(restBase(discord.apiUrl)).setToken(discord.botToken);
  try {
    const route =
      discord.guildId === undefined
        ? Routes.applicationCommands(discord.applicationId)
        : Routes.applicationGuildCommands(discord.applicationId, discord.guildId);
    const registered = registeredSchema.parse(
      await rest.put(route, { body: shipCommandDefinition(config.policy.command) }),
    );
    const where = discord.guildId === undefined ? 'globally' : `in server ${discord.guildId}`;
    out.stdout.write(`registered ${registered.map((c) => `/${c.name} (${c.id})`).join(', ')} ${where}\n`);
    return 0;
  } catch (error) {
    out.stderr.write(`registering the command failed: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  } finally {
    rest.clearHashSweeper();
    rest.clearHandlerSweeper();
  }
}


if (isEntryModule(process.argv[1], import.meta.url)) {
  process.exitCode = await main(process.env, { stdout: process.stdout, stderr: process.stderr });
}
