"""Write tests/fixtures/tokenizer_cases.json: captions and their tokens as
NLTK produces them (lowercase, sentence split, NLTKWordTokenizer).

    python3 tests/reference/make_tokenizer_fixtures.py

Needs nltk. NLTK's Punkt model cannot be downloaded here, so the sentence
split is the documented rule (the same one sgraf-text implements, written
again here independently): a sentence ends after a whitespace-delimited token
ending in . ! or ? (closing quotes/brackets allowed after it), unless the
period ends an ellipsis, an initial, a token with an inner period, or an
abbreviation of the list below. The word step is NLTK's own code.
"""

import itertools
import json
import os
import random

import nltk
from nltk.tokenize import NLTKWordTokenizer

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "prof", "mt", "ft", "ave", "etc", "inc",
    "ltd", "co", "corp", "gen", "gov", "sgt", "capt", "lt", "col", "rev", "hon", "approx",
}
CLOSERS = "\"')]}»”’"
OPENERS = "\"'([{«“‘`"

_word = NLTKWordTokenizer()


def ends_sentence(token):
    core = token.rstrip(CLOSERS)
    if not core:
        return False
    if core[-1] in "!?":
        return True
    if core[-1] != ".":
        return False
    if core.endswith(".."):
        return False
    word = core[:-1].lstrip(OPENERS).lower()
    if len(word) == 1 and word.isalpha():
        return False
    return "." not in word and word not in ABBREVIATIONS


def split_sentences(text):
    sentences, start, pos = [], 0, 0
    tokens = [(m.start(), m.end()) for m in __import__("re").finditer(r"\S+", text)]
    for (s, e), nxt in zip(tokens, tokens[1:] + [None]):
        if nxt is not None and ends_sentence(text[s:e]):
            sentences.append(text[start:e])
            start = nxt[0]
    if text[start:].strip():
        sentences.append(text[start:])
    return sentences


def tokenize(caption):
    text = caption.lower()
    return [t for s in split_sentences(text) for t in _word.tokenize(s)]


HANDWRITTEN = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs play in the snow",
    "A little girl in a pink dress is jumping into a pool.",
    "A black-and-white dog runs through the tall grass.",
    "The man's bike is leaning against the wall.",
    "The children's toys are scattered on the floor.",
    "She can't believe it's already 5 o'clock!",
    "They're walking down the street; it's raining.",
    "I'd like a cup of coffee, please?",
    "We'll see what happens... maybe.",
    "He said, \"Look at that!\" and pointed.",
    "\"Hello,\" she said.",
    "A sign reads 'Welcome to the U.S.A.' near the road.",
    "A man (wearing a hat) sits on a bench.",
    "Three people [two men and a woman] stand at the bus stop.",
    "A crowd of people at a concert {outdoors}.",
    "A woman holds a sign: \"Free hugs\".",
    "The score was 3-2 at halftime.",
    "A 10-year-old boy plays soccer.",
    "The temperature is 98.6 degrees.",
    "It costs $3.50 at the store.",
    "About 1,000 people attended the event.",
    "Over 50% of the crowd wore red.",
    "Email me at john@example.com tomorrow.",
    "The #1 player scored a goal & celebrated.",
    "A man -- tired and hungry -- walks home.",
    "A dog jumps over a log\u2014what a leap!",
    "A woman in a caf\u00e9 drinks espresso.",
    "A na\u00efve tourist takes a selfie in S\u00e3o Paulo.",
    "Two men speak \u00abfrench\u00bb at the table.",
    "\u201cSmile,\u201d the photographer says.",
    "\u2018Look,\u2019 said the child.",
    "A man in St. Louis waves at the camera.",
    "Dr. Smith examines a patient.",
    "Mr. and Mrs. Jones walk their dog.",
    "The U.S. flag waves in the wind.",
    "A man wearing a t-shirt that says \"I <3 NY\".",
    "Gonna go, gotta run, wanna come?",
    "I cannot do this, lemme try.",
    "'Tis the season to be jolly.",
    "A boy and his dog. They are playing fetch. The sun is setting.",
    "Is that a bird? No, it's a plane!",
    "Wow!! What a jump!!",
    "A man at 3 p.m. waits for the train.",
    "The sign says STOP.",
    "People walking on a busy street in Tokyo, Japan.",
    "A skateboarder does a trick on a ramp ...",
    "A woman's hand holding a smartphone",
    "  A man    with   extra   spaces .  ",
    "A group of friends at a barbecue: burgers, hot dogs, and corn.",
    "Children playing in a fountain on a hot day",
    "A chef prepares sushi*",
    "The dog's ball is red; the cat's toy is blue.",
    "A man in a blue shirt isn't smiling.",
    "You've got to see this.",
    "We're here, you're there, they're everywhere.",
    "J. K. Rowling signs books.",
    "A car parked at 5th Ave. and Main St. in New York.",
    "A building with a clock -- it reads 12:30.",
    "A woman's dress, her shoes, and her bag are all red.",
    "Ice-cream cones on a hot summer's day.",
    "A \u00fcber-cool DJ spins records.",
    "Stra\u00dfe in M\u00fcnchen at night.",
    "A man shouts \"Go!\" as the race starts.",
    "Kids' bikes lined up outside.",
    "The 1990's style car is parked outside.",
    "A mother and child at the beach (on vacation).",
    "Players in uniform #23 and #45 celebrate.",
    "Two women chat over tea & cake.",
    "Men work on a roof, 20 ft. above the ground.",
    "An old man sits alone, etc. and waits.",
    "Where's the dog? Over there.",
    "\"Why?\" asked the boy. \"Because,\" said his father.",
    "A surfer rides a 6' wave.",
    "A cat sits in a box... and sleeps.",
    "A horse-drawn carriage in Central Park",
    "The team's coach yells at the referee!",
    "Motorcyclists race around a track; one is ahead.",
    "A baby with a pacifier (sleeping).",
    "Dancers perform on stage \u2013 the crowd cheers.",
]

SUBJECTS = ["a man", "A woman", "two kids", "The dog", "an old lady", "Three men", "a girl's cat",
            "the team", "A boy", "Some tourists"]
VERBS = ["is riding", "rides", "walks past", "looks at", "is holding", "can't find",
         "won't leave", "sits near", "jumps over", "plays with"]
OBJECTS = ["a red bike.", "the ball!", "a \"big\" sign.", "a tree, smiling.", "the U.S. flag.",
           "his phone... again.", "(what else?) a car.", "a 3-foot fence.", "the caf\u00e9's door.",
           "a dog; then leaves.", "a hat -- really.", "the St. Patrick's day parade."]


def cases():
    rng = random.Random(4)
    out = list(HANDWRITTEN)
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS))
    rng.shuffle(combos)
    for s, v, o in combos[:260]:
        text = f"{s} {v} {o}"
        if rng.random() < 0.3:
            text += " " + rng.choice(HANDWRITTEN)
        out.append(text)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "fixtures", "tokenizer_cases.json")
    data = {"nltk_version": nltk.__version__,
            "cases": [{"text": t, "tokens": tokenize(t)} for t in cases()]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=0)
    print(f"wrote {len(data['cases'])} cases to {os.path.abspath(path)}")


if __name__ == "__main__":
    main()
