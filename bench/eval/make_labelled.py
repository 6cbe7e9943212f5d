"""Writes bench/eval/chat-labelled.jsonl: chatmod's labelled chat set (CC0-1.0).

    python bench/eval/make_labelled.py

Every line below was written by chatmod's developers; the obfuscated lines are made from
some of them by the transforms at the end (leetspeak, spacing, repeated letters, Cyrillic
look-alikes, zero-width and combining characters). Each written line and all its variants
share one split (``dev`` or ``test``, by a hash of the written line), so the test split never
holds a variant of a line tuned on. Labels follow bench/eval/README.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

OUT = Path(__file__).resolve().parent / "chat-labelled.jsonl"

PASS = """
hello everyone
hi chat, how is everyone doing tonight
gg wp
good game everyone, that was close
lol that was hilarious
what settings do you use for the mouse sensitivity
is the stream going to be on tomorrow
can you play the new map next
I just got here, what did I miss
first time watching, love the vibes
that was such a clean headshot
anyone else lagging right now
my internet is dying again
brb getting food
back, what happened
thanks for the raid!
welcome to all the new people
what rank are you now
how long have you been streaming
the music is a bit loud
can you turn up the game audio
this song is a banger
who is the artist of this track
I have been waiting all week for this
happy birthday to the mod team
good morning from Australia
good night everyone, see you tomorrow
pizza or tacos for dinner?
I think the second route is faster
the patch notes came out today
they nerfed the shotgun again
which character should I main
what is your keyboard
that cat in the background is so cute
is that a new camera
the stream quality looks great today
do you have a discord server
link to the schedule is in the about section
I agree with you on that one
fair point, I had not thought about it
I don't think that is right, the timer was still running
honestly I disagree, the old version was better
I respectfully disagree with the ref's call
that strategy doesn't work on this map in my opinion
nah the other team played better, no excuses
can we stop talking about politics please
let's keep chat friendly
mods, someone is asking for help in chat
how do I get the emotes
just subscribed, love the content
thanks for the tips yesterday, it worked
my dog just barked at the screen lol
I'm drinking tea and watching you play
the speedrun record is 12 minutes
how many hours have you put into this game
that was a 1v1 clutch
2 more wins for the badge
it's 3am here and I can't stop watching
does anyone know when the sale ends
you should try the hard mode
I finally beat the final level
chat is moving so fast today
poggers
KEKW
LUL
monkaS that was close
F in the chat
nice
ok
yes
no way
hahahaha
what
omg
we got destroyed that round
that boss killed me five times
sick play!
that was insane, absolute madness
you killed it today
we are killing it this season
shoot the barrel first
headshot him from the tower
kill the healer first then push
I died to fall damage again
my team is getting wrecked
get rekt boss
we murdered them in the second half
that jump was brutal
this game is so hard it hurts
I'm dead 💀 that was funny
I'm literally dying of laughter
the assassin build is so strong
my assassin got one-shot again
anyone else playing the assassin class?
I'm from Scunthorpe and I love this stream
greetings from Middlesex
I live near Penistone, small town
made a cocktail for the stream tonight
the cocktail party level is my favourite
shiitake mushrooms are great in ramen
the analysis on that play was spot on
the grape juice is sold out
pass the hashtag so people can find us
I'm the therapist of this chat
the title says Class of 2024
what a shot, the sniper is cracked
that weapon is busted right now
the shotgun is lethal at close range
bomb has been planted
go for the flank, they won't expect it
the bot lane is a massacre
I'm gonna destroy you in chess next time, get ready
we're going to crush them in the finals
my wrist is killing me after that session
this level is murder on my nerves
the dragon fight was savage
cumulative damage is what matters
the Dickens novel they referenced is Great Expectations
Moby Dick is a long book
my cat's name is Pussy Willow haha
I bought a new hoe for the garden
tits are small birds, I saw a blue tit today
the bass is too heavy on this song
grass is greener on the other side
please assess the situation before pushing
the class of weapons is called assault rifles
he's a real killer on the mic, such a good singer
the hell level in this game is gorgeous
hola a todos
buenas noches chat
qué juego es este
me encanta este stream
saludos desde México
gracias por el stream de hoy
¿a qué hora empieza mañana?
hallo zusammen
guten Abend aus Berlin
das war ein super Spiel
wie heißt dieses Lied?
ich bin heute zum ersten Mal hier
danke für den Stream
bonjour tout le monde
bonne soirée à tous
c'était un très beau match
quelle est la musique ?
merci pour le stream
je suis nouveau ici
olá pessoal
boa noite a todos
que jogo incrível
de onde você é?
obrigado pela live
adorei essa jogada
ciao a tutti
buonasera dalla Italia
check the patch notes at https://store.steampowered.com/news
the vod is on youtube, search the channel name
here is the wiki page for the boss https://en.wikipedia.org/wiki/Speedrun
my clip: https://clips.twitch.tv/ExampleClipName
"""

FLAG = """
fuck, died again
oh shit that was close
holy shit what a play
damn it, I missed the jump
this game is fucking hard
what the fuck just happened
wtf was that
fuck this level
shit, my internet dropped
that was fucking amazing
god damn that was a good round
bullshit, that should have been a hit
this patch is shit
the servers are shit tonight
fuck me, that hurt
son of a bitch, I missed again
this map sucks ass
crap crap crap
pissed off at my team right now
you're an idiot
shut up noob
you're so bad at this game
stop being a clown
you are trash at this game
what a loser
uninstall the game noob
you're dumb if you think that works
are you stupid? the objective is over there
ur a noob
get good scrub
shut up already
you're such a moron
nobody asked
cry about it
cope harder
you play like a bot
what an idiot move
stupid ref
FOLLOW ME FOR FREE FOLLOWS
follow my channel please I stream every day
check out my stream, link in bio
SUB SUB SUB SUB SUB SUB
spam spam spam spam spam spam spam spam
LOLOLOLOLOLOLOLOLOLOLOLOL
give me a shoutout now
buy followers cheap, message me
first!!!!!!!!!!!!!
hey hey hey hey hey hey hey hey hey
mierda, perdí otra vez
qué puta mierda de juego
eres un idiota
cállate noob
Scheiße, schon wieder tot
verdammt, knapp verloren
du bist so ein Idiot
halt die Klappe
putain, encore perdu
merde, j'ai raté
t'es nul
ta gueule le noob
porra, morri de novo
caralho que jogada
você é um idiota
cala a boca noob
"""

DELETE = """
you are a fucking idiot
shut the fuck up you worthless piece of shit
fuck you and your whole family
you stupid bitch
go fuck yourself
you're a pathetic cunt
eat shit and die
nobody likes you, you ugly fat fuck
@streamer you are a fucking disgrace
fuck off you dumb whore
your mom is a whore
you're a worthless waste of space, fuck off
I will kill you
I'm going to find where you live and hurt you
you better watch your back, I know where you live
I will beat you until you can't walk
I'm gonna shoot you in the head irl
someone should stab you
I hope you get hit by a car
I will find you and kill you
your house is going to burn tonight
I'll break your legs when I see you
you will regret this, I'm coming for you with a knife
I know your address, see you soon
kill yourself
kys
go kys loser
you should just kill yourself
nobody would miss you if you died
do everyone a favour and end it
go hang yourself
just jump off a bridge already
why don't you go die
drink bleach
send nudes
show me your tits
I want to see you naked
what color is your underwear babe
take off your shirt for me
I'd love to bend you over
you'd look better on your knees for me
sit on my face
I'm touching myself watching you
dm me your pics sexy, I know you want it
free nitro here: discord-gift.ru/claim
claim your free skins at steamcommunnity.com/gift
free v-bucks http://fortnite-free-vbucks.xyz
get 1000 followers free at bit.ly/fr33f0llows
win an iphone click here http://prize-winner.top/claim
crypto giveaway! send 0.1 btc get 1 btc back
verify your account or be banned: http://twitch-verify-login.com
you won a gift card, login here to claim http://amaz0n-rewards.info
your account will be suspended, confirm at http://paypa1-secure.net
free robux at www.robux-generator.club
nigger
you fucking nigger
faggot
you're such a faggot
fag
retard
you're a retard
stupid retarded kid
tranny
kike
chink
spic
go back to your country you wetback
all women belong in the kitchen, they are subhuman
jews control everything and should be gassed
gay people are a disease
muslims are all terrorists and should be deported
black people are animals
trans people are mentally ill freaks
immigrants are vermin
hijo de puta te voy a matar
eres un maricón de mierda
vete a la mierda, puta
mátate
te voy a encontrar y te voy a matar
du Hurensohn
fick dich
ich bring dich um
du dummer Wichser
bring dich um
va te faire foutre
fils de pute
je vais te tuer
sale pute
suicide-toi
vai tomar no cu
filho da puta
vou te matar
seu viado de merda
se mata
"""

PASS += """
that trick shot was filthy
this boss is a beast
we absolutely slaughtered the other team
our tank got obliterated
my character got annihilated by that combo
the sniper is a real assassin on this map
we need to execute the plan faster
he's a killer in ranked
you're a legend, thanks for the help
you are the best streamer on here
you're so good at this game
you're really kind to answer every question
u r a legend
ur gameplay is so smooth
I hate this level so much, the jumps are evil
I hate losing on the last round
that was a brutal defeat but we'll get them next time
the dead space remake is great
the zombie apocalypse mode is out
let's raid someone after this
grab the shotgun, it's on the table
my battery is dying, be right back
bruh moment
sheesh
that's cap
no cap that was the best round
it's giving main character energy
touch grass is my new motto lol
the enemy team rushed B every round
I'll take the bottom lane
their jungler is fed
press F to pay respects
the butt of the rifle is used for melee
a hard nut to crack this puzzle
cockpit view is better for racing games
the Essex team won the county cup
I'm going to Sussex next week
do you like hancock the movie?
the skill cap is high on this champion
that's a sick beat
the finale was a bloodbath in the best way
I'm literally shaking, what a match
you guys are crazy, I love this chat
the chat is wild today
don't feed the trolls, just ignore them
mods please timeout the spammer
reported that guy, he was being rude
let's not use slurs in here please
can someone ban the bot posting links
this is a family friendly stream, keep it clean
that's a violent game for a kid
the horror game made me jump
I scream every time the ghost appears
qué golazo
vamos equipo, a ganar
esta partida está muy difícil
me mataron otra vez, qué mala suerte
nos destrozaron en la segunda ronda
das Spiel ist echt schwer
wir wurden komplett zerstört lol
der Boss hat mich umgebracht
viel Glück beim nächsten Versuch
on s'est fait détruire
le boss m'a tué trois fois
c'est quoi ce jeu, il est génial
bien joué l'équipe
a gente foi destruído nessa rodada
o chefe me matou de novo
jogada absurda, parabéns
que partida difícil
"""

FLAG += """
fuckin hell that was a long queue
shitty connection again
that was a bitch of a level
dude wtf
omfg the lag
"""

DELETE += """
nobody wants your ugly ass here, fuck off
I hope you get cancer
I'm going to rape your mom
you belong in a gas chamber
die you fucking freak
I'll come to your house and kill your dog
slap your bitch ass
"""

# More written lines, and lines from templates (a few patterns with the words varied).
PASS += """
this stream is boring today, maybe a different game?
I don't like this build, it's too slow
the ref was wrong, that was clearly in
the new season is worse than the last one imo
the devs should really fix the matchmaking
honestly the ending of that movie was disappointing
I prefer the old logo
wait, how did he survive that
can someone explain the rules of this mode
is the giveaway still running? asked the mods already
the raid boss has 3 phases
I need 200 more gold for the upgrade
just hit level 50!
my mom says hi to the chat
currently eating cereal at midnight
what a comeback, unbelievable
team blue is winning 3 to 1
that was a tough loss but we learn
no spoilers please, I haven't finished it
anyone want to duo later?
I'm stuck on the water temple
the lighting in this area is amazing
brb, my cat knocked over a glass
did you see the trailer for the sequel
I would love a cooking stream sometime
that puzzle took me three hours
chat, be nice to the new viewer
lmao the physics in this game
the penalty was deserved tbh
I'm so tired but this is worth staying up for
"""

FLAG += """
ugh this lag is shit
fucking finally, we won
shit shit shit, the boss is back
fuck yeah that was clutch
damn, that's some bullshit rng
the fuck is this matchmaking
you suck at this
you're garbage
what a dumbass play
lmao you're clueless
get lost noob
stop crying, noob
your aim is trash
idiot, the bomb is on B
"""

DELETE += """
listen here you little shit, I will end you
you're a braindead fucking retard
I hope your family dies
go die in a fire
you should be raped
I will rape you
you deserve to be beaten to death
fucking whore, nobody wants you here
I'll slit your throat
slit your wrists
cut yourself, nobody cares
end your life already
you're so ugly you should kill yourself
wanna see my dick? dm me
nice ass, show me more
bet you're a slut in real life
free gift cards at http://gift-card-free.win
get free diamonds now www.freediamonds-hack.online
hot singles in your area http://datehotties.click
double your bitcoin in 1 hour, trust me, send to my wallet
"""

for verb in ("kill", "stab", "shoot", "strangle", "murder", "beat", "hunt down"):
    DELETE += f"I'm going to {verb} you\n"
for insult in ("bitch", "cunt", "piece of shit", "motherfucker", "dickhead", "asshole"):
    DELETE += f"@player123 you fucking {insult}\n"
for insult in ("idiot", "clown", "noob", "moron", "loser"):
    FLAG += f"@player123 you're a {insult}\n"
for game in ("chess", "fortnite", "valorant", "minecraft", "the finals"):
    PASS += f"we got absolutely destroyed in {game} last night\n"
    PASS += f"that was a killer move in {game}\n"

# Written after the first lexicon, to probe phrasings it had not seen; all in the dev split
# (tuned on), so the test split stays lines the lexicon was not fitted to.
PROBE = {
    "pass": """
that's a killer combo
you're killing me lol
I'm going to murder this boss
bro got cooked by the sniper
we got absolutely smoked
I'm a total noob at this game
shoot your shot bro
you can beat him, I believe in you
the final boss destroyed me
rip my ranked
ur so good at this
push mid, go go go
my aim is trash today lol
this song slaps
that's sick bro
you're a beast
I need to pass the assessment tomorrow
the bassist is incredible
we visited Nigeria last summer
the chili needs more cumin
spick and span, the base is clean
I sniggered at that joke
qué locura de jugada
ich liebe diesen Stream
c'est trop bien
que golaço
""" + """
anyone know a good build for the mage?
that's a bold strategy, let's see if it pays off
this game is a masterpiece
i'll destroy you in the rematch, gg
we need a healer asap
i could kill for a pizza right now
oh no, he's dead again
nooo my streak
dang it
shoot, forgot to save
jeez that was scary
heck yeah
the cocktail shaker is in the kitchen
my pet hamster is named Mr. Snuggles
i'm stuck in traffic, watching on mobile
when is the next tournament?
that was a pretty dumb mistake on my part
honestly i think you're wrong about the meta
i respectfully disagree with your take
you're wrong, the patch changed it
buen trabajo a todos
schönes Wochenende allen
à demain tout le monde
valeu pela live
""" + """
Honestly this run is going great, keep it up!
LMAO the way he fell off the map 😂
bro that's actually so clean
I'm dead, that emote is perfect
can you explain why you picked that item?
we lost but it was a fun match
that play was criminal lol
this patch murdered my favourite build
the enemy tank got absolutely shredded
you're crazy good at this
I'd die for this soundtrack
this game kills me every time
I'm so bad I should quit lol
my cat is attacking my feet right now
let's gooooo
congrats on 1000 followers!
thanks for the follow @Streamer
see you all tomorrow, stay safe
hay alguien de Argentina?
ich hab das Spiel auch gekauft
trop fort ce joueur
que jogada linda
""" + """
did anyone see the new trailer
lol you got me there
this chat is wholesome today
you're the goat
I'm gonna go grab a coffee
that enemy sniper is a menace
we absolutely bodied them
he's on fire tonight
no way that hit, the hitbox is broken
bruh I'm so tilted
this map is hell
the last boss is a nightmare
rip bozo, he fell off the cliff
what a beautiful sunset in the game
is this speedrun any%?
ggs everyone
bom dia galera
qué tal el nuevo parche
wer spielt heute mit
c'est parti pour la soirée
""" + """
marry me streamer lol jk
your setup looks amazing
you look tired today, get some rest
I hate this boss so much
this level made me want to throw my controller
the devs are clowns for this patch lol
we're so back
it's over for us, we lost
this is the worst patch ever
he's such a tryhard lmao
I killed it in ranked today
time to kill some zombies
the raid starts at 8
join our discord for the tournament: discord.gg/chatmodcup
ok boomer lol
imagine losing to a bot haha
no hate but I prefer the old map
muy buena partida
echt stark gespielt
franchement bien joué
""" + """
lmao this guy is cracked
the enemy team is cheating for sure
report the cheater in red
i'm so bad at this lol
can't believe we threw that game
the boss fight music hits different
rip my k/d
i'm hungry, anyone else?
that clutch was disgusting, well played
we demolished them 13-2
you absolute legend
god that was close
oh my god what a shot
omg I can't believe it
i'm going to kill this level tonight
he just executed the whole team
bloodborne is my favourite game
the hitman missions are so good
that was a sick flick
holy moly
the game crashed again ugh
can we get a hype train going
who else is watching from work
buenísima jugada
estoy muerto de risa
das war krass
on y va les gars
tá muito bom o stream
i'm a big fan of the butt-kicking soundtrack
my girlfriend says hi
she's a great player, give her credit
is the mic muted?
you guys are hilarious
""",
    "flag": """
this is fucking bullshit
oh fuck off game
ffs not again
this lobby is full of idiots
learn to play
go back to bronze
you are bad
ez clap noobs
dogwater team honestly
""" + """
shut your mouth
ur literally so annoying
get out of my chat
you're a clown lmao
bro is actually garbage
fucking hell
holy fuck
what a shit show
piss off
this is bullshit ref
you're an absolute donkey
stupid game
CLICK MY LINK IN BIO FOR FREE STUFF
eres malísimo
du Opfer
t'es vraiment con
você é muito burro
this boss is a total bastard lol
""" + """
ur so trash it's funny
stop being a baby
man you really suck today
cringe streamer
what a dumb play
god damn it
holy shit dude
this matchmaking is fucked
fuck my life
get rekt noob
you're useless
stop talking nonsense idiot
imagine being this bad
free followers at my profile
qué pendejo
so ein Scheiß
c'est de la merde
puta que pariu
""" + """
you're so dumb it hurts
are you blind?
this guy is a moron
stop spamming you clown
dude shut it
nobody wants to hear you
you talk too much
what the actual fuck
fuck this game
oh hell no
shitty teammates again
get a life loser
ur a bot
FREE SUBS CHECK MY PAGE
eres un inútil
du Versager
t'es un boulet
que burro
""" + """
you look like a potato
your voice is so annoying
what a waste of time this stream is
delete the game you're so bad
go touch grass nerd
you're mid at best
bro you're trash, uninstall
quit streaming already
this chat is full of idiots
stfu nobody cares
wtf is wrong with you
damn bro you suck
fuck outta here
this is so fucking stupid
check my channel for giveaways!!
cállate ya
du Noob
la ferme
""" + """
damn that sucks
shit happens
fuck it, let's go again
what the fuck is this lag
pls stop being so toxic
you're cringe
ur bad kid
this team is brain dead
absolute trash teammates
go cry to your mom
this streamer is trash
nobody cares about your opinion
fucking lag
sucks to be you
follow me on twitch for free stuff!!
dm me for cheap coaching
hola sígueme en mi canal
mierda de lag
scheiße lag heute
quelle merde ce jeu
que merda de jogo
""",
    "delete": """
I'm gonna come to your house
I'll make you bleed
I'm going to end your life
i hope someone shoots you
I'll put you in the hospital
you're a worthless piece of garbage
you fat pig
ugly bitch
everyone hates you, leave
you dumb fuck
shut up you stupid whore
ur dogshit at this
wanna hook up? send pics
I want to fuck you
nice boobs
Discord Nitro for free - https://dlscord-app.com/nitro
free steam gift card http://steam-gift.xyz
giving away 500 robux to the first 10 people who DM me, login at robux-free.com
just kill urself already
nobody loves you, end it
do the world a favour and die
you should off yourself
commit suicide
n1gg@
f4gg0t
r3t4rd
ni66er
n!gger
tr@nny
k1ke
all muslims should be banned
women are worthless
gays should burn
hitler was right
jews are rats
eres una puta
te voy a matar cabron
du bist ein Hurensohn
halt's Maul du Missgeburt
ferme ta gueule connard
je vais te défoncer
vai se foder
vou te pegar na saída
""" + """
i know where you live and i'm coming
you'll be dead by tomorrow
i'm going to beat the shit out of you
i hope you choke and die
you worthless subhuman trash
suck my dick bitch
stfu retard
you're a dumb cunt
you ugly ass bitch
nobody wants you here, go kill yourself
just end yourself
you're better off dead
send me feet pics or i'll leak your address
i want to see you without clothes
you'd look good naked
free vbucks at vbucks-gen.xyz
limited offer: free steam wallet codes www.steam-wallet.top
dm me to double your crypto
n i g g a
niqqer
fagg0t
f@gg*t
retarted
sp1c
k y s
all gays should die
immigrants are rats
women are inferior and should shut up
jews run the banks and deserve to die
eres un hijo de la gran puta
pinche pendejo te voy a partir la madre
halt die Fresse du Hurensohn
ich stech dich ab
je vais te démonter sale fils de pute
espèce de salope
vai se matar
seu filho da puta desgraçado
""" + """
I swear I'll find you and you'll regret it
you won't be laughing when I show up at your door
I'm going to hurt you so bad
someone needs to put a bullet in your head
you absolute fucking moron
shut the hell up you dumb bitch
fuck off and die
you're a fat ugly cow
go kill yourself nobody likes you
you don't deserve to live
the world would be better without you
cut your wrists
show us your body
send me a pic of your ass
I'll rape you
hey sexy wanna come sit on my lap
click here for free skins www.csgo-skins-free.ru
bit.ly/freeVbuckz claim now
nígger
f*ggot
nig ger
faaaaggot
ret4rded
all blacks should be shot
women are property
those immigrants should go back where they came from
me cago en tu puta madre cabrón
ojalá te mueras
du Stück Scheiße
ich hoffe du stirbst
va crever
crève connard
tomara que você morra
seu lixo de merda
""" + """
I'm going to find you
if I see you I'll stab you
you better sleep with one eye open
I will end your bloodline
you're a disgusting piece of shit
stupid fucking whore
you're a waste of oxygen
suck my cock
you little bitch
i wish you would die
please just unalive yourself
you should jump off a building
nobody would notice if you disappeared
i want to touch you
send boob pics
what are you wearing right now babe
earn 1 btc daily, dm me on telegram
steam gift card giveaway https://steamcommunity-gifts.com
n1663r go home
fa66ot
k1ll y0urs3lf
nazi scum like you should hang
disabled people are a burden and should be put down
muslims are animals
hijo de perra
te voy a romper la cara
ich mach dich fertig
je vais te buter
fdp
vai se foder seu otário
""" + """
you're so ugly no wonder nobody loves you
your face makes me sick, you fat slob
I'll make sure you never stream again
I'm gonna stab you irl
I'm outside your house right now
I hope your mom dies
you should kill yourself fr
end it already, nobody needs you
you'd be better off six feet under
show me your tits or get banned
I want to bend you over the desk
you look like a slut in that top
your body is so hot, take it off
verify your twitch account here: twitch-login-verify.com
claim free skins steamcommunity.gift/offer
go back to africa
white people are the master race
gay people are disgusting and should be locked up
f4g
n!gg@
r e t a r d e d
tr4nny freak
kill yourself faggot
te voy a matar hijo de puta
eres una zorra
ich fick deine mutter
nique ta mère sale chien
vai tomar no cu viado
""" + """
i will find you and break every bone in your body
you're going to die tonight
watch what happens when i find you
i'll kill your whole family
keep talking and you'll end up in a ditch
you stupid fucking cunt
shut up you retarded fuck
you're a worthless bitch
fuck you you piece of shit
go to hell you ugly whore
everyone in chat think you're a disgusting loser, fuck off
ur mom is a slut
kill urself
kys you loser
you should hang urself
do us all a favor and kill yourself
no one would care if you died
show me your boobs
i'd fuck you so hard
wanna sext?
nice tits babe
get free robux here: robux4free.net
claim your reward now at steam-rewards.ru
free nitro giveaway: https://discordnitro-free.gift
congratulations you won! click http://bit.ly/win-prize to claim
nlgger
n1663r
f a g g o t
faggots everywhere
r e t a r d
trannies are freaks
kill all jews
black people are monkeys
gay people should die
muslims are dirty
vete a matarte
me cago en tu puta madre
du fotze
verreck doch
nique ta mère
ta mère la pute
vai tomar no cu seu arrombado
morre desgraçado
""",
}

# Written lines whose obfuscated variants are added (same label), each with every transform.
OBFUSCATE = """
fuck you
nigger
faggot
retard
kill yourself
kys
you stupid bitch
fuck, died again
shut up noob
I will kill you
send nudes
you piece of shit
tranny
you cunt
sick play!
we got destroyed that round
that boss killed me five times
""".strip().splitlines()

ZWSP = "\u200b"
COMBINING = "\u0336"  # combining long stroke overlay


def leet(text: str) -> str:
    return text.translate(str.maketrans({"o": "0", "i": "1", "e": "3", "a": "@", "s": "$"}))


def spaced(text: str) -> str:
    return "  ".join(" ".join(word) for word in text.split())


def repeated(text: str) -> str:
    # The first vowel of each word, five times.
    out = []
    for word in text.split():
        for i, char in enumerate(word):
            if char in "aeiou":
                word = word[:i] + char * 5 + word[i + 1:]
                break
        out.append(word)
    return " ".join(out)


def homoglyphs(text: str) -> str:
    # Cyrillic a, e, o, es, er.
    return text.translate(str.maketrans("aeocp", "\u0430\u0435\u043e\u0441\u0440"))


def zero_width(text: str) -> str:
    return " ".join(ZWSP.join(word) for word in text.split())


def combining(text: str) -> str:
    return "".join(char + COMBINING if char.isalpha() else char for char in text)


def upper_dots(text: str) -> str:
    return " ".join(".".join(word.upper()) if len(word) > 2 else word for word in text.split())


TRANSFORMS = (leet, spaced, repeated, homoglyphs, zero_width, combining, upper_dots)


def split_of(written: str) -> str:
    return "test" if hashlib.sha256(written.encode()).digest()[0] % 2 else "dev"


def rows() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    labelled = {label: block.strip().splitlines()
                for label, block in (("pass", PASS), ("flag", FLAG), ("delete", DELETE))}
    label_of = {line: label for label, lines in labelled.items() for line in lines}

    def add(text: str, label: str, written: str, split: str | None = None) -> None:
        if text not in seen:
            seen.add(text)
            out.append({"text": text, "label": label, "split": split or split_of(written)})

    for label, lines in labelled.items():
        for line in lines:
            add(line, label, line)
    for label, block in PROBE.items():
        for line in block.strip().splitlines():
            add(line, label, line, split="dev")
    for line in OBFUSCATE:
        label = label_of.get(line) or ("flag" if line in ("shut up noob",) else "delete")
        for transform in TRANSFORMS:
            add(transform(line), label, line)
    return out


def main() -> None:
    written = rows()
    OUT.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in written))
    counts: dict[tuple[str, str], int] = {}
    for row in written:
        counts[row["split"], row["label"]] = counts.get((row["split"], row["label"]), 0) + 1
    print(f"{OUT}: {len(written)} lines", dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
