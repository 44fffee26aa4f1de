#!/bin/sh
# Regenerates the demo appliance's spoken prompts (the names listed under
# [prompts] in ../default.toml) with espeak-ng, converted by sox to what the
# media engine plays: 8 kHz, mono, µ-law WAV, peak-normalised to -3 dBFS.
#
# Deterministic for a given espeak-ng and sox version. Run from anywhere:
#
#     sh firmware-config/prompts/make_prompts.sh
#
# Needs: espeak-ng, sox.
set -eu

cd "$(dirname "$0")"

VOICE="${VOICE:-en-us}"
SPEED="${SPEED:-160}"   # words per minute

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say() {
    name="$1"
    text="$2"
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$tmp/$name.wav" "$text"
    sox "$tmp/$name.wav" -r 8000 -c 1 -e u-law "$name.wav" norm -3
}

say goodbye            "Thank you for calling. Goodbye."
say callback_ok        "We will call you back as soon as an agent is free. Goodbye."
say agent_logged_in    "You are logged in."
say agent_logged_out   "You are logged out."
say agent_ready        "You are ready."
say agent_not_ready    "You are not ready."
say position           "You are number"
say wait               "in the queue. Your estimated wait is"
say less_than_a_minute "less than a minute."
say minutes            "minutes."
say support_welcome    "Thank you for calling support. Please hold for the next available agent. To be called back instead, press star."
say sales_welcome      "Thank you for calling sales. Please hold for the next available agent."
say main_menu          "For sales press 1, for support press 2, to enter your account number press 9."
say account_prompt     "Please enter your account number, followed by the hash key."
say invalid            "Sorry, that is not a valid choice."
say closed             "We are closed right now. Please call again during our opening hours. Goodbye."

for n in 0 1 2 3 4 5 6 7 8 9 10; do
    say "n$n" "$n"
done
