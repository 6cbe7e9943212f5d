"""The embedded engine's lexicon (chatmod.abuse): what it catches, what it leaves alone, and
that no text makes it raise. Property tests follow HYPOTHESIS_PROFILE (thorough: 10,000)."""

from __future__ import annotations

import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.abuse.detect import MAX_ASSESSED_CHARS, Lexicon

ZWSP = "\u200b"
CYRILLIC_A, CYRILLIC_O = "\u0430", "\u043e"
DELETE_LEVEL = 0.85  # the engine's default delete_threshold
FLAG_LEVEL = 0.6  # and flag_threshold


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.shipped()


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I will find you and kill you", "threat"),
        ("i know where you live", "threat"),
        ("ich bring dich um", "threat"),
        ("te voy a matar", "threat"),
        ("kys", "self_harm"),
        ("k y s", "self_harm"),
        ("go hang yourself", "self_harm"),
        ("suicide-toi", "self_harm"),
        ("send nudes", "sexual"),
        ("show me your tits", "sexual"),
        ("free nitro at discord-gift.ru/claim", "scam"),
        ("verify your account: http://twitch-verify-login.com", "scam"),
        ("n1gg3r", "slur"),
        (f"f{CYRILLIC_A}gg{CYRILLIC_O}t", "slur"),
        (f"r{ZWSP}e{ZWSP}t{ZWSP}a{ZWSP}r{ZWSP}d", "slur"),
        ("niiiigger", "slur"),
        ("maricón", "slur"),
        ("immigrants are vermin", "hate"),
        ("you stupid fucking idiot", "targeted_abuse"),
        ("@someone you cunt", "targeted_abuse"),
        ("du Hurensohn", "targeted_abuse"),
        # An @mention aims a line even when leetspeak would read its "@" as an "a".
        ("@sam piece of shit", "targeted_abuse"),
        ("@t0m such a pathetic bitch honestly", "targeted_abuse"),
        # Spellings of a listed word ("fuk", "phuck", "biatch") are that word.
        ("phuk u and ur friends", "targeted_abuse"),
        ("fuk off you clown", "targeted_abuse"),
        # Phrases spelt out letter by letter, links included.
        ("k i l l y o u r s e l f", "self_harm"),
        ("s e n d n u d e s", "sexual"),
        ("claim free nitro: n i t r o - g i f t . x y z", "scam"),
        (f"i will sho{CYRILLIC_O}t you", "threat"),
        ("\u0455\u04bbut up and d\u0456e", "self_harm"),  # Cyrillic dze, shha, i
        # Families beyond the first five languages: it, pl.
        ("sei proprio uno stronzo", "targeted_abuse"),
        ("ti ammazzo stasera", "threat"),
        ("rozjebie cie po szkole", "threat"),
        ("idz i powies sie", "self_harm"),
        # Hate: a group with what it supposedly does or deserves, in several languages.
        ("muslims ruin everything they touch", "hate"),
        ("the jews run the banks", "hate"),
        ("girls should not be allowed to vote", "hate"),
        ("you belong in the kitchen", "hate"),
        ("lesbians are disgusting", "hate"),
        ("you absolute waste of a human", "targeted_abuse"),
        ("esp\u00e8ce de p\u00e9d\u00e9", "slur"),
        ("eres un retrasado", "slur"),
        ("fluchtlinge raus aus unserem land", "hate"),
        ("los inmigrantes son unas ratas", "hate"),
        # Sexual harassment with fillers and in more languages.
        ("zeig uns doch deinen arsch", "sexual"),
        ("muestrame el culo", "sexual"),
        ("show boobs for donos", "sexual"),
        # Threats: a slow death, and violence placed in real life even with game words.
        ("make sure you suffer", "threat"),
        ("ill shoot you irl after this round", "threat"),
        # Account-takeover scams.
        ("sorry i reported you by mistake, dm the mod team to fix it", "scam"),
        ("te lo juro, eres un hijo de puta", "targeted_abuse"),
    ],
)
def test_clear_abuse_is_delete_level(lexicon: Lexicon, text: str, category: str) -> None:
    found = lexicon.assess(text)
    assert (found.category, found.score >= DELETE_LEVEL) == (category, True)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("fuck, died again", "profanity"),
        ("son of a bitch, I missed again", "profanity"),
        ("putain, encore perdu", "profanity"),
        ("you're an idiot", "mild_insult"),
        ("shut up noob", "mild_insult"),
        ("SUB SUB SUB SUB SUB SUB", "spam"),
        ("follow me for free follows", "spam"),
        ("fck, lag again", "profanity"),
        ("what a clusterfuck of a patch", "profanity"),
        ("kurwa mac, przegralem", "profanity"),
        ("cazzo che lag", "profanity"),
        ("noob stay mad", "mild_insult"),
        ("ur brain is slower than my wifi", "mild_insult"),
        ("raid the castle at noon, raid the castle at noon", "spam"),
        ("(\u256f\u00b0\u25a1\u00b0)\u256f\ufe35 \u253b\u2501\u253b " * 4, "spam"),
        ("copy this to show respect for the mods", "spam"),
        ("THIS IS THE LOUDEST MESSAGE IN THE WHOLE CHAT", "spam"),
        ("subscribe to my youtube channel", "spam"),
        # Not a name called: the speaker or a thing (was any line of three words or fewer).
        ("lifes a bitch", "profanity"),
        ("this bitch of a boss", "profanity"),
        # Spanish/French "te" aims nothing by itself (was: any "te" made it targeted).
        ("te lo juro, que mierda de juego", "profanity"),
        ("je te jure, ce jeu de merde", "profanity"),
    ],
)
def test_casual_profanity_mild_insults_and_spam_are_flag_level(
        lexicon: Lexicon, text: str, category: str) -> None:
    found = lexicon.assess(text)
    assert found.category == category
    assert FLAG_LEVEL <= found.score < DELETE_LEVEL


@pytest.mark.parametrize(
    "text",
    ["we got destroyed that round", "that boss killed me", "sick play", "I'm from Scunthorpe",
     "made a cocktail", "the assassin build is strong", "I'm going to murder this boss",
     "kill the healer first", "we visited Nigeria", "spick and span", "I sniggered",
     "I'm a total noob at this", "my aim is trash today", "u r a legend",
     "check https://www.youtube.com/watch?v=abc", "hahahaha", "buenas noches chat",
     # In-game violence with game words nearby is no threat.
     "ill shoot you first next round", "i will kill you in the 1v1", "gonna destroy you in ranked",
     "watch me murder you in this duel", "i'll hunt you down on the map, gg",
     # Self-directed, numbers inside words, chants.
     "im trash lol", "skill issue on my part", "my skill issue tbh", "top10 plays of the week",
     "1v1 me on dust2", "gg wp gg wp gg wp", "lets go lets go lets go", "gg2 everyone",
     "te quiero mucho chat", "je te dis que c'est bon",
     # Words that are abuse in one language and ordinary in another, or outside a frame.
     "el vuelo est\u00e1 retrasado", "ele pede desculpa", "what's your kd ratio",
     "got blown up by a creeper", "ty for the raid", "brb going back to the kitchen",
     "make sure you pay attention", "you die slowly in the storm zone", "cholera outbreak",
     "can you copy this build", "trans people dont deserve the hate", "a guerra de troia"],
)
def test_banter_and_harmless_words_match_nothing(lexicon: Lexicon, text: str) -> None:
    assert lexicon.assess(text).category is None


def test_harmless_phrases_are_kept_from_the_model(lexicon: Lexicon) -> None:
    assert lexicon.assess("Moby Dick is a long book").model_text == "is a long book"
    assert lexicon.assess("sick play!").model_text == "!"
    # A farming hoe, and violence in a game, are not what the profanity model thinks.
    assert "hoe" not in lexicon.assess("got the iridium hoe on my farm").model_text
    assert lexicon.assess("my new hoe lol").model_text == "my new hoe lol"
    assert lexicon.assess("gonna kill that boss").model_text == "gonna that boss"
    assert lexicon.assess("gonna kill you irl").model_text == "gonna kill you irl"
    assert lexicon.assess("i suck at aiming").model_text == "at aiming"


def test_dotted_runs_take_linear_time() -> None:
    # The link pattern backtracked quadratically on "a.a.a...": 20,000 characters took 9 s on
    # the 2-CPU test machine. (A bound ~100 times what it takes now: a peer's line must not
    # stall the engine.)
    from chatmod.abuse.detect import URL

    started = time.perf_counter()
    assert [m.group(0) for m in URL.finditer("a." * 10_000)] == ["a." * 9_999 + "a"]
    assert time.perf_counter() - started < 3.0


def test_only_the_start_of_a_long_line_is_read(lexicon: Lexicon) -> None:
    assert lexicon.assess("kys " + "a." * 50_000).category == "self_harm"
    filler = " ".join(f"zq{a}{b}{c}" for a in "bdfgh" for b in "bdfgh" for c in "bdfgh")
    assert 2 * len(filler) < MAX_ASSESSED_CHARS < 3 * len(filler)
    assert lexicon.assess(f"{filler} {filler} kys").category == "self_harm"
    # (The filler said three times is copypasta: only the self-harm past the limit is unseen.)
    assert lexicon.assess(f"{filler} {filler} {filler} kys").category != "self_harm"


def test_a_long_repeated_line_is_scanned_in_bounded_time(lexicon: Lexicon) -> None:
    # The copypasta scan is words x phrase sizes: a 2,000-character line must stay cheap.
    started = time.perf_counter()
    for _ in range(20):
        lexicon.assess("ab cd ef gh " * 500)
        lexicon.assess(" ".join(str(n) for n in range(1000)))
    assert time.perf_counter() - started < 3.0


@given(st.text())
@example("\u0000" * 20)
@example("@" * 50)
@example("http://" + "a." * 40)
def test_any_text_gets_an_assessment(text: str) -> None:
    found = Lexicon.shipped().assess(text)
    assert 0.0 <= found.score <= 1.0
    assert (found.category is None) == (found.score == 0.0)
