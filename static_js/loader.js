/*! signalgate first-party loader; docs: static_js/README.md */
!function(w,d){'use strict';
var old=w.sg,U,last='',user={},cons={},loc=location,E,vid,
COLLECT="__SG_COLLECT__",
DK='value currency order_id contents content_type content_name content_category num_items search_string status predicted_ltv'.split(' '),
UK='email phone external_id first_name last_name city state zip country date_of_birth gender'.split(' '),
CK=['ad_storage','analytics_storage','ad_user_data','ad_personalization'],
// name:'GA4 Snap Pinterest' names (README)
N={PageView:'page_view PAGE_VIEW pagevisit',ViewContent:'view_item VIEW_CONTENT pagevisit',
Search:'search SEARCH search',AddToCart:'add_to_cart ADD_CART addtocart',
AddToWishlist:'add_to_wishlist ADD_TO_WISHLIST',InitiateCheckout:'begin_checkout START_CHECKOUT',
AddPaymentInfo:'add_payment_info ADD_BILLING',Purchase:'purchase PURCHASE checkout',
Lead:'generate_lead  lead',CompleteRegistration:'sign_up SIGN_UP signup',Subscribe:' SUBSCRIBE',
StartTrial:' START_TRIAL',Contact:'',CustomizeProduct:'',Donate:'',FindLocation:'',Schedule:'',SubmitApplication:''},
nop=()=>{},
Z=o=>{var r,k;for(k in o)if(o[k]!=null&&o[k]!=='')(r=r||{})[k]=o[k];return r},
A=a=>a.length?a:U,
J=o=>JSON.parse(JSON.stringify(o)),
get=k=>{try{return JSON.parse(localStorage.getItem(k))}catch(e){}},
put=(k,v)=>{try{v&&v.length!==0?localStorage.setItem(k,JSON.stringify(v)):localStorage.removeItem(k)}catch(e){}},
queue=()=>{var a=get('sg_q');return Array.isArray(a)?a.filter(Array.isArray):[]},
rid=()=>{try{return crypto.randomUUID()}catch(e){
  return Array.from(crypto.getRandomValues(new Uint8Array(16)),b=>(b+256).toString(16).slice(1)).join('')}},
send=(b,ok,ko)=>{
  try{fetch(E,{method:'POST',body:b,keepalive:true,credentials:'include',headers:{'Content-Type':'text/plain'}}).then(ok,ko)}
  catch(e){try{navigator.sendBeacon(E,b)?ok():ko()}catch(e){ko()}}},
S=(o,q)=>{o.vid=vid;var b=JSON.stringify(o);
  new Blob([b]).size<64e3&&send(b,nop,q?()=>{try{
    var a=queue();b=JSON.stringify(Object.assign({},o,{user:U}));
    if(b.length<16e3){a.push([Date.now(),b]);
      while(a.length>20||JSON.stringify(a).length>16e3)a.shift();put('sg_q',a)}}catch(e){}}:nop)},
H=(n,k,v)=>{var o={event:n,url:loc.href};o[k]=v;v&&S(o)},
K=a=>CK.forEach(k=>{var v=a&&a[k];if(v=='granted'||v=='denied')cons[k]=v}),
T=(n,a,p,f)=>{
  if(typeof n!='string'||/^sg:/.test(n))return;
  a=a||{};p=Z(p)||{};
  var D={},X={},k,v,t,id,it;
  for(k in a){v=a[k];k=='custom'?Object.assign(X,v):DK.includes(k)?D[k]=v:X[k]=v}
  for(k in X){v=X[k];t=typeof v;
    if(!/^[A-Za-z_]\w{0,63}$/.test(k)||!(t=='string'||t=='boolean'||t=='number'&&isFinite(v)))delete X[k]}
  it=D.contents;
  D.contents=Array.isArray(it)?A(it.filter(x=>x&&x.id!=null).map(x=>({id:x.id,quantity:x.quantity,price:x.price}))):U;
  D.custom=Z(X);D=Z(D)||{};
  id=p.event_id!=null?String(p.event_id):D.order_id!=null?String(D.order_id):rid();
  if(n=='PageView')last=loc.href;
  S({event:n,event_id:id,url:loc.href,referrer:/^https?:/i.test(d.referrer)?d.referrer:U,
    data:Z(D),user:Z(user),consent:Z(cons)},1);
  f&&cons.ad_storage!='denied'&&F(n,D,id)},
F=(n,D,id)=>{
  var std=N.hasOwnProperty(n),m=(std?N[n]:'').split(' '),it=D.contents||[],
  ids=A(it.map(x=>String(x.id))),v=D.value,cu=D.currency,ss=D.search_string,
  tx=n=='Purchase'?D.order_id:U,ct=D.content_type||ids&&'product',
  M=(a,b,c)=>A(it.map(x=>({[a]:x.id,[b]:x.quantity,[c]:x.price}))),
  V=(k,g)=>{try{w[k]&&g(w[k])}catch(e){}};
  V('fbq',g=>g(std?'track':'trackCustom',n,J(Object.assign({},D.custom,D,
    {custom:U,contents:M('id','quantity','item_price'),content_ids:ids,content_type:ct})),{eventID:id}));
  V('ttq',g=>g.track(n=='PageView'?'Pageview':n,J({value:v,currency:cu,content_type:ct,
    contents:M('content_id','quantity','price')}),{event_id:id}));
  V('gtag',g=>g('event',m[0]||n,J({value:v,currency:cu,items:M('item_id','quantity','price'),
    transaction_id:tx,search_term:ss,event_id:id})));
  m[1]&&V('snaptr',g=>g('track',m[1],J({price:v,currency:cu,item_ids:ids,
    transaction_id:tx,client_dedup_id:id})));
  V('pintrk',g=>g('track',m[2]||n,J({value:v,currency:cu,order_id:D.order_id,
    line_items:M('product_id','product_quantity','product_price'),event_id:id})))},
sg=function(c,a,b,e){try{
  if(c=='track')T(a,b,e,1);
  else if(c=='page')T('PageView',a,b);
  else if(c=='identify'){
    if(!a)user={};else UK.forEach(k=>{if(k in a)user[k]=a[k]});
    user=Z(user)||{};H('sg:identify','user',Z(user))}
  else if(c=='consent'){K(a);put('sg_consent',cons);H('sg:consent','consent',Z(cons))}
}catch(e){}},
auto=()=>{loc.href!=last&&sg('page')},
start=()=>{try{
  var now=Date.now(),q=queue().filter(x=>now-x[0]<864e5);
  vid=now+'-'+rid().replace(/-/g,'').slice(0,16);
  K(get('sg_consent'));
  put('sg_q',q);
  q.forEach(x=>send(x[1],()=>put('sg_q',queue().filter(y=>y[1]!=x[1])),nop));
  w.sg=sg;sg.v=1;
  (old.q||[]).forEach(a=>sg.apply(0,a));
  auto();
  w.addEventListener('popstate',auto);
  ['pushState','replaceState'].forEach(k=>{var f=history[k];
    f&&(history[k]=function(){var r=f.apply(this,arguments);auto();return r})});
}catch(e){}};
try{
  if(old&&old.v)return;
  var s=d.currentScript||[...d.scripts].reverse().find(e=>/\/sg\.js$/.test(String(e.src).split(/[?#]/)[0]));
  E=new URL(COLLECT.indexOf('__')?COLLECT:'e',s&&s.src||loc.origin+'/').href;
  old=w.sg=old||function(){(old.q=old.q||[]).push(arguments)};old.v=1;
  d.prerendering?d.addEventListener('prerenderingchange',start,{once:true}):start();
}catch(e){}
}(window,document);
