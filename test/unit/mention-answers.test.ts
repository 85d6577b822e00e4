import { describe, expect, it } from 'vitest';
import { createMentionAnswers } from '../../src/adapters/discord/mention-answers.js';

describe('mention answers per person and thread', () => {
  it('allows max answers in any window, counting each person in each thread apart', () => {
    let now = 0;
    const answers = createMentionAnswers({ max: 2, windowMs: 60_000, capacity: 10, now: () => now });
    expect(answers.take('t1', 'u1')).toBe(true);
    now = 1_000;
    expect([answers.take('t1', 'u1'), answers.take('t1', 'u1')]).toEqual([true, false]);
    // Another person, or the same person elsewhere, has a budget of their own.
    expect(answers.take('t1', 'u2')).toBe(true);
    expect(answers.take('t2', 'u1')).toBe(true);
    // The window slides: the first answer leaves it after a minute, the second a second later.
    now = 59_999;
    expect(answers.take('t1', 'u1')).toBe(false);
    now = 60_000;
    expect(answers.take('t1', 'u1')).toBe(true);
    expect(answers.take('t1', 'u1')).toBe(false);
  });

  it('forgets the longest-quiet pair past its capacity, so memory stays bounded', () => {
    const answers = createMentionAnswers({ max: 1, windowMs: 60_000, capacity: 2, now: () => 0 });
    expect(answers.take('t', 'a')).toBe(true);
    expect(answers.take('t', 'b')).toBe(true);
    // a is seen again (refused), so b is now the longest quiet; c pushes b out.
    expect(answers.take('t', 'a')).toBe(false);
    expect(answers.take('t', 'c')).toBe(true);
    expect(answers.take('t', 'b')).toBe(true);
    expect(answers.take('t', 'a')).toBe(true);
  });
});
