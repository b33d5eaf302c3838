"""The task prompts of ``data/make_tasks.py``: subjects, templates, and the slogan and poem prompts
with their constraint ``meta`` (the held-out design is in ``make_tasks``' docstring).

Apart from the corpus generator so that each file stays short; ``make_tasks`` is the entry point.
"""
from __future__ import annotations

import random

SLOGAN_LENGTHS = {"train": (3, 4, 6, 7), "heldout": (5,), "corpus": (3, 4, 5, 6, 7)}
HELDOUT_POEM_SHAPES = ((4, 4), (3, 5), (5, 4))
POEM_SHAPES = {
    "train": tuple((r, w) for r in (2, 3, 4, 6) for w in (3, 4, 5, 6) if (r, w) not in HELDOUT_POEM_SHAPES),
    "heldout": HELDOUT_POEM_SHAPES,
}
POEM_SHAPES["corpus"] = POEM_SHAPES["train"] + HELDOUT_POEM_SHAPES  # the policy's pretraining knows every shape
RHYME_OPTIONS = {
    2: (None, [[1, 2]]), 3: (None, [[1, 3]]), 4: (None, [[2, 4]], [[1, 2], [3, 4]]),
    5: (None, [[2, 4]]), 6: (None, [[2, 4, 6]]),
}
#: share of slogan prompts with a required / a forbidden word: the corpus has more of them than
#: the prompt files, so the tiny policy sees enough examples to learn to copy a quoted word
WORD_CONSTRAINT_RATES = {"prompts": (0.3, 0.2), "corpus": (0.6, 0.4)}
COUNTS = {"train": (180, 160), "heldout": (60, 60)}  # (slogans, poems)
CORPUS_SIZE = (2400, 2400)

# subject | keywords (head noun first) | related words (never keywords)
SLOGAN_SUBJECTS = {"train": """
coffee shop|coffee,shop,espresso,latte|warm,fresh,brew,roast,cup,morning,sip,rich,aroma,mug,beans,cozy
bakery|bakery,bread,baked,pastry|warm,fresh,oven,crust,sweet,golden,loaf,butter,flour,morning,daily,soft
gym|gym,fitness,workout,muscle|strong,sweat,lift,train,power,move,push,energy,fit,goals,body,stronger
hotel|hotel,room,stay,suite|rest,comfort,sleep,quiet,welcome,relax,luxury,night,soft,pillow,calm,escape
pharmacy|pharmacy,medicine,health,pills|care,well,trusted,heal,feel,safe,help,daily,better,healthy,caring,relief
law firm|law,firm,lawyer,legal|justice,trust,fight,rights,defend,fair,strong,advice,win,honest,case,side
taxi company|taxi,cab,ride,driver|fast,safe,city,go,arrive,anywhere,quick,seat,road,trip,ready,night
bank|bank,money,savings,banking|secure,trust,future,grow,safe,wealth,save,plan,invest,smart,steady,gold
shoe store|shoe,shoes,sneakers,boots|walk,step,comfort,style,feet,run,fit,stride,wear,stylish,miles,soft
garden center|garden,plants,seeds,soil|grow,green,bloom,fresh,roots,sun,water,leaf,nature,life,spring,seedlings
burger joint|burger,burgers,grill,fries|juicy,hot,tasty,bite,cheese,beef,fresh,hungry,flavor,crispy,grilled,sauce
sushi bar|sushi,rice,fish,rolls|fresh,bite,art,ocean,tasty,roll,taste,pure,simple,chef,wasabi,delicate
laundromat|laundromat,laundry,clothes,wash|clean,fresh,soft,fold,dry,quick,easy,spin,bright,white,day,load
travel agency|travel,trip,vacation,journey|explore,world,adventure,go,discover,fly,away,dream,beach,escape,sun,ticket
zoo|zoo,animals,wild,lions|family,fun,see,roar,day,explore,wonder,nature,kids,visit,amazing,tigers
cinema|cinema,movie,movies,film|watch,screen,popcorn,story,night,magic,seats,big,show,tickets,dream,stars
farm market|farm,market,produce,harvest|fresh,local,grown,green,organic,ripe,sweet,field,picked,honest,seasonal,crops
ski resort|ski,slopes,snow,resort|winter,mountain,cold,powder,speed,peak,white,glide,fun,alpine,adventure,chill
tea house|tea,teahouse,leaves,chai|calm,warm,steep,cup,green,quiet,peace,pour,sip,herbal,gentle,moment
hardware store|hardware,tools,hammer,nails|build,fix,repair,strong,home,project,make,handy,job,wood,sturdy,work
electronics store|electronics,gadgets,tech,devices|smart,new,fast,power,future,screen,connect,digital,modern,bright,plug,sound
seafood restaurant|seafood,fish,shrimp,crab|fresh,ocean,catch,sea,taste,boat,salty,daily,grilled,lemon,tide,waves
furniture store|furniture,sofa,chairs,tables|home,comfort,style,room,living,wood,design,cozy,sit,relax,modern,space
jewelry store|jewelry,rings,diamonds,necklace|sparkle,gift,love,forever,precious,elegant,beauty,glow,treasure,shine,style,bright
barber shop|barber,haircut,hair,shave|sharp,fresh,clean,style,look,cut,classic,smooth,neat,fade,men,trim
candy shop|candy,sweets,chocolate,treats|sweet,sugar,fun,kids,joy,color,taste,happy,bright,smile,yummy,delight
plumber|plumber,pipes,plumbing,leaks|fix,fast,water,drain,repair,reliable,call,day,trusted,flow,dry,home
moving company|moving,movers,boxes,move|new,home,pack,lift,safe,careful,truck,easy,start,fresh,quick,carry
camera shop|camera,cameras,photos,lens|capture,moment,picture,focus,memory,light,click,sharp,color,frame,see,forever
art gallery|art,gallery,paintings,artists|color,beauty,inspire,create,vision,canvas,modern,culture,wonder,see,feel,bold
airline|airline,flight,fly,planes|sky,travel,world,wings,above,journey,clouds,far,comfort,destination,safe,arrive
water park|water,park,slides,pool|splash,fun,summer,wet,cool,wild,family,sun,waves,laugh,ride,day
language school|language,languages,speak,learn|words,world,talk,fluent,study,new,culture,voice,grow,class,open,friends
cleaning service|cleaning,clean,spotless,cleaners|fresh,shine,home,tidy,sparkle,dust,care,bright,neat,easy,new,free
juice bar|juice,smoothie,smoothies,fruit|fresh,green,healthy,squeeze,energy,vital,sweet,cold,natural,glow,sip,bright
""", "heldout": """
bookstore|bookstore,novels,chapters,authors|
flower shop|flowers,flower,bouquet,florist,petals|
bicycle repair shop|bicycle,bicycles,bike,bikes,pedal|
pet grooming salon|pet,pets,grooming,paws,puppy|
ice cream parlor|ice,cream,scoop,cone,parlor|
yoga studio|yoga,studio,pose,mat|
car wash|car,cars,suds,rinse,carwash|
music school|music,piano,melody,lessons|
dental clinic|dental,dentist,teeth,tooth|
pizza place|pizza,pizzas,slice,pepperoni,mozzarella|
camping store|camping,tent,tents,campfire,hiking|
toy store|toy,toys,puzzles,dolls|
""", "extra": """
donut shop|donut,donuts,glaze,sprinkles|sweet,fresh,warm,morning,soft,round,treat,sugar,hot,daily,joy,ring
sandwich shop|sandwich,sandwiches,deli,bread|fresh,stack,bite,lunch,tasty,meat,cheese,quick,hearty,made,daily,layers
tailor|tailor,suits,sewing,seams|sharp,style,perfect,measure,classic,made,custom,elegant,thread,cloth,look,fine
roofing company|roof,roofs,roofing,shingles|safe,dry,strong,home,storm,rain,protect,solid,above,shelter,last,sturdy
golf club|golf,golfers,course,fairway|green,swing,play,club,drive,hole,sun,relax,game,par,friends,calm
bowling alley|bowling,bowl,lanes,pins|strike,fun,friends,night,roll,spare,score,family,game,party,ball,cheer
surf shop|surf,surfboards,surfing,boards|waves,ocean,ride,sun,beach,wild,salt,summer,free,board,paddle,cool
hair salon|salon,hair,stylist,curls|style,color,fresh,look,beauty,shine,cut,soft,glow,new,care,confident
"""}

POEM_SUBJECTS = {"train": """
rain|rain,raindrops,drizzle,showers|wet,gray,clouds,falling,puddles,soft,tap,window,roof,cool,drip,silver
moon|moon,moonlight,lunar,crescent|night,silver,pale,glow,shadow,sky,quiet,stars,dream,white,round,dark
river|river,stream,current,riverbank|flow,water,stones,run,banks,cold,clear,bend,fish,reeds,rush,deep
forest|forest,trees,woods,pines|green,leaves,shade,moss,deep,branches,birds,quiet,path,wild,roots,tall
snow|snow,snowflakes,snowfall,frost|white,cold,winter,soft,silent,drift,fall,hush,deep,pure,bright,still
ocean|ocean,sea,waves,tide|blue,salt,shore,deep,wind,foam,roll,endless,sand,spray,wide,sail
mountain|mountain,mountains,peak,summit|high,stone,climb,cliff,snow,tall,rock,wind,view,sky,steep,cloud
garden|garden,roses,blossoms,tulips|bloom,green,soil,bees,sun,grow,bright,sweet,path,spring,fresh,gate
autumn|autumn,maple,harvest,acorns|red,gold,leaves,fall,wind,cool,brown,crisp,orange,drift,late,fade
winter|winter,icicles,blizzard,chill|cold,white,long,gray,wind,bare,night,frozen,dark,fire,warm,still
summer|summer,heat,sunshine,july|hot,long,days,bright,golden,lazy,light,green,sky,warm,swim,bees
spring|spring,april,buds,blossom|green,new,rain,fresh,grow,birds,sing,light,soft,bloom,young,wake
dawn|dawn,sunrise,daybreak,morning|light,gold,wake,first,pale,rise,birds,new,glow,sky,soft,begin
night|night,midnight,darkness,starlight|stars,moon,dark,quiet,sleep,dream,black,deep,still,owl,cold,late
wind|wind,breeze,gusts,gale|blow,howl,cold,sweep,whisper,trees,leaves,wild,free,sky,rush,loud
stars|stars,star,starry,constellations|night,bright,shine,far,sky,light,glow,dark,wish,silver,cold,high
desert|desert,dunes,sand,cactus|hot,dry,sun,wind,gold,wide,empty,still,heat,dust,vast,bare
lake|lake,lakeside,loons,ripples|still,water,blue,calm,mirror,reeds,cold,deep,fish,quiet,light,glass
home|home,house,hearth,family|warm,door,light,love,safe,fire,rest,table,bread,old,kind,stay
city|city,streets,towers,traffic|lights,loud,busy,night,crowd,fast,glass,noise,tall,walk,rain,gray
clouds|clouds,cloud,cumulus,overcast|white,float,drift,gray,soft,sky,high,rain,slow,wind,shapes,pass
fire|fire,flames,embers,blaze|warm,red,glow,burn,smoke,night,light,crackle,bright,heat,orange,dance
birds|birds,sparrow,robin,wings|sing,fly,song,tree,nest,sky,morning,free,call,light,branch,feather
storm|storm,thunder,lightning,tempest|dark,rain,wind,loud,flash,roar,black,wild,sky,crash,cold,fear
meadow|meadow,grass,wildflowers,field|green,bees,sun,tall,sway,soft,gold,light,wind,bloom,open,summer
candle|candle,candlelight,wick,taper|light,glow,small,warm,dark,night,flicker,soft,burn,gold,still,room
""", "heldout": """
harbor|harbor,boats,dock,anchor|
lighthouse|lighthouse,beacon,keeper,lantern|
orchard|orchard,apples,cherries,pears|
valley|valley,vale,hollow,glen|
island|island,isle,lagoon,palms|
library|library,books,shelves,reader|
volcano|volcano,lava,magma,crater|
glacier|glacier,glaciers,iceberg,icefield|
""", "extra": """
bees|bees,hive,honey,buzzing|clover,gold,sun,hum,busy,sweet,wings,summer,field,warm,fly,work
fog|fog,mist,haze,foggy|gray,soft,grey,hide,slow,cold,damp,dim,pale,drift,morning,still
village|village,cottages,lanes,villagers|old,small,quiet,smoke,bell,church,green,path,home,evening,warm,stone
sunset|sunset,dusk,twilight,sundown|red,gold,orange,fade,low,sky,warm,glow,last,light,evening,purple
bells|bells,bell,chimes,ringing|ring,sound,tower,bright,call,morning,clear,loud,sweet,toll,echo,church
rainbow|rainbow,rainbows,colors,arc|bright,sky,rain,sun,red,violet,after,light,bend,shine,soft,wide
"""}

TITLE_MODIFIERS = ("Autumn", "Winter", "Morning", "Evening", "Quiet", "Silver", "Summer", "Spring",
                   "Lonely", "Distant", "Golden", "Last")
TITLE_TIMES = ("Dawn", "Dusk", "Night", "Noon")

SLOGAN_FILLER = ("your best new good great every life love joy happy better more feel come enjoy "
                 "simply always here for you we all true time just made real open first today").split()
POEM_FILLER = ("the a and of in on with by my our all through over under softly slowly again alone "
               "away beyond below old long we you now there gentle silent falling rising calling "
               "dreaming waiting singing shining breathing wandering evening heart time world").split()
RHYME_FAMILIES = [f.split() for f in (
    "day way stay gray play may", "night light bright white flight sight", "sky high fly by sigh why",
    "sea free tree me see be", "sun run done one begun", "moon soon tune noon june",
    "snow glow slow go know below", "song long along strong belong", "air there fair where care bare",
    "rain lane plain stain chain remain", "still hill will fill chill", "sing spring wing ring bring",
    "near clear year here dear", "wide tide side ride hide")]

SLOGAN_TEMPLATES = ("Write a slogan for {a} {subject} in exactly {n} words.", "Write a {n}-word slogan for {a} {subject}.")
POEM_TEMPLATES = ('Write a {rows}-line poem titled "{title}" with {wpr} words per line.',
                  'Write a poem titled "{title}" in {rows} lines of {wpr} words each.')


def parse_subjects(block: str) -> list[dict]:
    """``subject|kw,kw|word,word`` lines -> dicts."""
    out = []
    for line in block.strip().splitlines():
        subject, kws, rel = line.split("|")
        out.append({"subject": subject, "keywords": kws.split(","), "words": [w for w in rel.split(",") if w]})
    return out


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def rhyme_sentence(groups) -> str:
    parts = []
    for g in groups or []:
        nums = [str(i) for i in g]
        joined = nums[0] + " and " + nums[1] if len(nums) == 2 else ", ".join(nums[:-1]) + " and " + nums[-1]
        parts.append(f" Lines {joined} must rhyme.")
    return "".join(parts)


def titles_for(subject: str) -> list[str]:
    noun = subject.title()
    return [f"{m} {noun}" for m in TITLE_MODIFIERS if m != noun] + [f"{noun} at {t}" for t in TITLE_TIMES if t != noun]


def slogan_prompt(rng: random.Random, subj: dict, split: str) -> dict:
    n = rng.choice(SLOGAN_LENGTHS[split])
    pool = SLOGAN_FILLER + (subj["words"] if split != "heldout" else [])
    p_required, p_forbidden = WORD_CONSTRAINT_RATES["corpus" if split == "corpus" else "prompts"]
    required = [rng.choice(pool)] if rng.random() < p_required else []
    forbidden = [rng.choice([w for w in pool if w not in required])] if rng.random() < p_forbidden else []
    text = rng.choice(SLOGAN_TEMPLATES).format(a=article(subj["subject"]), subject=subj["subject"], n=n)
    text += "".join(f' Use the word "{w}".' for w in required)
    text += "".join(f' Do not use the word "{w}".' for w in forbidden)
    meta = {"subject": subj["subject"], "keywords": subj["keywords"], "words": n,
            "required": required, "forbidden": forbidden}
    return {"prompt": text, "task": "slogan", "meta": meta, "split": split}


def poem_prompt(rng: random.Random, subj: dict, split: str) -> dict:
    rows, wpr = rng.choice(POEM_SHAPES[split])
    title = rng.choice(titles_for(subj["subject"]))
    rhyme = rng.choice(RHYME_OPTIONS[rows])
    text = rng.choice(POEM_TEMPLATES).format(rows=rows, title=title, wpr=wpr) + rhyme_sentence(rhyme)
    meta = {"subject": subj["subject"], "keywords": subj["keywords"], "title": title, "rows": rows,
            "words_per_row": wpr, "rhyme": rhyme, "lang": "en"}
    return {"prompt": text, "task": "poem", "meta": meta, "split": split}


def make_prompts(rng: random.Random, split: str) -> list[dict]:
    """Distinct prompts of one split, slogans first (order is part of the deterministic output)."""
    out, seen = [], set()
    for make, subjects, count in ((slogan_prompt, parse_subjects(SLOGAN_SUBJECTS[split]), COUNTS[split][0]),
                                  (poem_prompt, parse_subjects(POEM_SUBJECTS[split]), COUNTS[split][1])):
        made = 0
        while made < count:
            rec = make(rng, subjects[made % len(subjects)], split)
            if rec["prompt"] not in seen:
                seen.add(rec["prompt"])
                out.append(rec)
                made += 1
    return out
